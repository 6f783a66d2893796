"""`boom bag`: the corpus -> bags stage, run as a Ray Data job.

Ray Data schedules one task per source file (one file is one task of the corpus) with the
configured fractional CPUs, streams their results back for the progress bar, and retries a
failed task; each task validates, quarantines and samples its file (`bagging.py`). The driver
then checks the bad-row budget, writes one manifest per bag and renames each finished bag into
`<workdir>/bags/<bag>/`. A bag whose manifest matches the request is left alone.

Tasks that `corpus.include` / `corpus.exclude` leave out are never read; every manifest lists
them. With `bagging.strategy` task or cluster (see `groups.py`) each file is validated once into
a full-task staging file, the groups are decided (computed clusters read a sample of each
task's queries back), and each group's bag is assembled from its tasks' files;
`<workdir>/bags/plan.json` then names the bags, their tasks and their default merge weights.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from boom_ray import __version__
from boom_ray.config import BoomConfig, bag_name
from boom_ray.corpus import reader as corpus_io
from boom_ray.corpus import groups as grouping
from boom_ray.corpus.bagging import BagRequest, FileResult, bag_source_file
from boom_ray.corpus.bags import PLAN_FILE, bag_dir, read_manifest, read_plan
from boom_ray.errors import BoomError
from boom_ray.runtime import disk_space, storage
from boom_ray.runtime.ray_session import init_ray, own_progress_only

SAMPLING_VERSION = 2
"""Bumped whenever the sampling algorithm or the bag schema changes, so old bags are not taken as
matching (2: bags carry pos_scores / neg_scores)."""


class TooManyBadRows(BoomError):
    pass


@dataclass
class BagOutcome:
    bags: dict[str, str]
    """Bag name -> "written" or "up to date"."""
    read: int = 0
    kept: int = 0
    quarantined: int = 0
    reasons: dict[str, int] | None = None


def bag_request(cfg: BoomConfig, ratio: float, source_fingerprint: str) -> dict:
    """What a bag is made from; a bag on disk is reused only when its manifest has the same."""
    request = {"ratio": ratio, "seed": cfg.bagging.seed, "nested": cfg.bagging.nested,
               "source_fingerprint": source_fingerprint, "sampling_version": SAMPLING_VERSION}
    if cfg.corpus.include is not None or cfg.corpus.exclude:  # absent by default: old bags still match
        request["filters"] = {"include": cfg.corpus.include, "exclude": cfg.corpus.exclude}
    if cfg.bagging.strategy != "random":
        b = cfg.bagging
        request.update(ratio=1.0, nested=False, strategy=b.strategy, groups=b.groups,
                       clusters=None if b.groups or b.strategy == "task" else
                       {"k": b.num_clusters, "sample": b.cluster_sample, "features": grouping.FEATURE_BUCKETS})
    return request


def _process_files(cfg: BoomConfig, files: list[corpus_io.SourceFile], requests: list[BagRequest],
                   quarantine_tmp: str, staging_tmp: str, show_progress: bool) -> list[FileResult]:
    import ray.data  # lazy: ray; boom --help, boom status and up-to-date bags never start Ray

    corpus_path = cfg.corpus.path
    seed, nested, chunk_rows = cfg.bagging.seed, cfg.bagging.nested, cfg.bagging.chunk_rows
    workdir = cfg.workdir

    def process(batch: dict) -> dict:
        fs, _ = storage.resolve(corpus_path)
        out_fs, _ = storage.resolve(workdir)
        results = [bag_source_file(fs, files[int(i)], requests, seed=seed, nested=nested,
                                   quarantine_dir=quarantine_tmp, staging_dir=staging_tmp,
                                   chunk_rows=chunk_rows, out_fs=out_fs).to_json()
                   for i in batch["index"]]
        return {"result": results}

    own_progress_only(ray.data.DataContext.get_current())  # one bar of our own, in rows of corpus files
    ds = ray.data.from_items([{"index": i} for i in range(len(files))], override_num_blocks=len(files))
    ds = ds.map_batches(process, batch_size=1, num_cpus=cfg.bagging.num_cpus)
    results: list[FileResult] = []
    total = sum(f.size for f in files)
    sizes = {f.relpath: f.size for f in files}
    with tqdm(total=total, unit="B", unit_scale=True, desc="bagging", disable=not show_progress,
              file=sys.stderr) as bar:
        for row in ds.iter_rows():
            result = FileResult.from_json(row["result"])
            results.append(result)
            bar.update(sizes[result.source])
            bar.set_postfix(files=f"{len(results)}/{len(files)}")
    return sorted(results, key=lambda r: r.source)


def _manifest(cfg: BoomConfig, name: str, ratio: float | None, request: dict, files: list[corpus_io.SourceFile],
              results: list[FileResult], left_out: dict[str, str]) -> dict:
    tasks = {}
    for r in results:
        tasks[r.task] = {"source": r.source, "type": r.types[0] if len(r.types) == 1 else (r.types or None),
                         "read": r.read, "quarantined": r.read - r.kept, "source_rows": r.kept,
                         "selected": r.selected[name]}
    read = sum(r.read for r in results)
    kept = sum(r.kept for r in results)
    return {
        "bag": name,
        "ratio": ratio,
        "seed": cfg.bagging.seed,
        "nested": cfg.bagging.nested,
        "request": request,
        "source": {"path": cfg.corpus.path, "files": len(files), "fingerprint": request["source_fingerprint"]},
        "rows": {"read": read, "kept": kept, "quarantined": read - kept,
                 "selected": sum(t["selected"] for t in tasks.values())},
        "tasks": tasks,
        "strategy": cfg.bagging.strategy,
        "left_out": left_out,
        "boom_ray_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_bagging(cfg: BoomConfig, *, force: bool = False, show_progress: bool = True) -> BagOutcome:
    """Bag the corpus per `cfg.bagging`; returns what was written and the row counts."""
    fs_in, files = corpus_io.discover(cfg.corpus.path, cfg.corpus.format)
    kept, left_out = grouping.filter_tasks([f.task for f in files], cfg.corpus.include, cfg.corpus.exclude)
    if not kept:
        raise corpus_io.CorpusError(f"{cfg.corpus.path}: corpus.include / corpus.exclude leave no task "
                                    f"(left out: {left_out})")
    files = [f for f in files if f.task in set(kept)]
    source_fp = corpus_io.fingerprint(fs_in, files)
    if cfg.bagging.strategy != "random":
        return _run_grouped(cfg, files, source_fp, left_out, force=force, show_progress=show_progress)
    out_fs, root = storage.resolve(cfg.workdir)
    wanted = {bag_name(r): r for r in cfg.bagging.ratios}
    status = {}
    todo = []
    for name, ratio in wanted.items():
        manifest = read_manifest(bag_dir(cfg.workdir, name))
        if not force and manifest and manifest.get("request") == bag_request(cfg, ratio, source_fp):
            status[name] = "up to date"
        else:
            todo.append(name)
    if not todo:
        rows = read_manifest(bag_dir(cfg.workdir, next(iter(wanted))))["rows"]
        _check_bad_fraction(cfg, rows["read"], rows["kept"], None, posixpath.join(cfg.workdir, "quarantine"))
        return BagOutcome(bags=status)

    init_ray(cfg.ray)
    bags_root = posixpath.join(root, "bags")
    out_fs.create_dir(bags_root, recursive=True)
    quarantine_final = posixpath.join(root, "quarantine")
    # a bag's size is known only once written (sampling, validation, compression): no check up
    # front, but a disk that fills is one line, given once the staging folders are gone
    with disk_space.disk_full_as_error(posixpath.join(cfg.workdir, "bags"), "the bags") as needed, \
            contextlib.ExitStack() as stack:  # staging folders, removed at the end (and after a crash)
        def staging(final: str) -> str:
            return stack.enter_context(storage.staging(out_fs, final))

        tmp = {name: staging(posixpath.join(bags_root, name)) for name in todo}
        quarantine_tmp = staging(quarantine_final)
        staging_tmp = staging(posixpath.join(bags_root, "staging"))
        written = [*tmp.values(), quarantine_tmp, staging_tmp]
        stack.push(lambda _type, exc, _tb: needed.record(exc, out_fs, written))  # before they are removed
        requests = [BagRequest(name, wanted[name], tmp[name]) for name in todo]
        results = _process_files(cfg, files, requests, quarantine_tmp, staging_tmp, show_progress)
        outcome = _finish_quarantine(cfg, out_fs, results, quarantine_tmp, quarantine_final)
        outcome.bags = status
        for name in todo:
            request = bag_request(cfg, wanted[name], source_fp)
            storage.write_json(out_fs, posixpath.join(tmp[name], "manifest.json"),
                               _manifest(cfg, name, wanted[name], request, files, results, left_out))
            final = bag_dir(root, name)
            storage.remove(out_fs, final)
            storage.move_dir(out_fs, tmp[name], final)
            status[name] = "written"
        return outcome


def _groups_of(cfg: BoomConfig, tasks: list[str], staged: str, out_fs) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The run's groups of tasks (and tasks in no group) once every task is staged in `staged`."""
    b = cfg.bagging
    if b.groups:
        found, ungrouped = grouping.match_groups(tasks, b.groups)
        return found, {t: "in no bagging.groups entry" for t in ungrouped}
    if b.strategy == "task":
        return grouping.per_task_groups(tasks), {}
    profiles = {}
    for task in tasks:
        with out_fs.open_input_file(posixpath.join(staged, task + ".parquet")) as handle:
            table = pq.read_table(handle, columns=["query", "prompt"])
        picks = np.unique(np.linspace(0, table.num_rows - 1, min(b.cluster_sample, table.num_rows)).astype(int))
        rows = table.take(picks).to_pylist()
        profiles[task] = grouping.text_features(f"{r['prompt'] or ''} {r['query']}" for r in rows)
    return grouping.cluster_tasks(profiles, b.num_clusters), {}


def _run_grouped(cfg: BoomConfig, files: list[corpus_io.SourceFile], source_fp: str, left_out: dict[str, str],
                 *, force: bool, show_progress: bool) -> BagOutcome:
    """Bags of the task and cluster strategies: one bag per group, each the whole of its tasks."""
    out_fs, root = storage.resolve(cfg.workdir)
    request = bag_request(cfg, 1.0, source_fp)
    plan = read_plan(cfg.workdir)
    if not force and plan and plan.get("request") == request and all(
            (read_manifest(bag_dir(cfg.workdir, n)) or {}).get("request") == request | {"group": n}
            for n in plan["bags"]):
        rows = plan["rows"]  # the bad-row budget applies to reused bags too (it is not in the request)
        _check_bad_fraction(cfg, rows["read"], rows["kept"], None, posixpath.join(cfg.workdir, "quarantine"))
        return BagOutcome(bags={n: "up to date" for n in plan["bags"]})
    init_ray(cfg.ray)
    bags_root = posixpath.join(root, "bags")
    out_fs.create_dir(bags_root, recursive=True)
    quarantine_final = posixpath.join(root, "quarantine")
    quarantine_tmp = storage.temp_name(quarantine_final)
    staged = storage.temp_name(posixpath.join(bags_root, "all-tasks"))
    tmp: dict[str, str] = {}
    with disk_space.disk_full_as_error(posixpath.join(cfg.workdir, "bags"), "the bags") as needed:
        try:
            return _write_grouped(cfg, files, source_fp, left_out, out_fs, request, quarantine_tmp, staged, tmp,
                                  show_progress)
        except BaseException as exc:
            needed.record(exc, out_fs, [*tmp.values(), staged, quarantine_tmp])
            raise
        finally:
            for path in [*tmp.values(), staged, quarantine_tmp]:
                storage.remove(out_fs, path)


def _write_grouped(cfg: BoomConfig, files: list[corpus_io.SourceFile], source_fp: str, left_out: dict[str, str],
                   out_fs, request: dict, quarantine_tmp: str, staged: str, tmp: dict[str, str],
                   show_progress: bool) -> BagOutcome:
    """The body of `_run_grouped`, writing under the staging names it owns (and removes)."""
    root = storage.resolve(cfg.workdir)[1]
    bags_root = posixpath.join(root, "bags")
    quarantine_final = posixpath.join(root, "quarantine")
    results = _process_files(cfg, files, [BagRequest("all", 1.0, staged)], quarantine_tmp,
                             storage.temp_name(staged), show_progress)
    outcome = _finish_quarantine(cfg, out_fs, results, quarantine_tmp, quarantine_final)
    by_task = {r.task: r for r in results}
    found, ungrouped = _groups_of(cfg, [r.task for r in results if r.kept], staged, out_fs)
    left_out = {**left_out, **ungrouped,
                **{r.task: "no valid rows" for r in results if not r.kept}}
    for name, tasks in found.items():
        tmp[name] = storage.temp_name(posixpath.join(bags_root, name))
        members = [FileResult(**{**by_task[t].__dict__, "selected": {name: by_task[t].kept}}) for t in tasks]
        for r in members:
            src = posixpath.join(staged, r.task + ".parquet")
            dst = posixpath.join(tmp[name], r.task + ".parquet")
            out_fs.create_dir(posixpath.dirname(dst), recursive=True)
            out_fs.copy_file(src, dst)
        manifest = _manifest(cfg, name, None, request | {"group": name}, files, members, left_out)
        storage.write_json(out_fs, posixpath.join(tmp[name], "manifest.json"), manifest | {"group": tasks})
    kept = max(1, outcome.kept)
    weights = {n: sum(by_task[t].kept for t in tasks) / kept for n, tasks in found.items()}
    for name in found:
        storage.remove(out_fs, bag_dir(root, name))
        storage.move_dir(out_fs, tmp[name], bag_dir(root, name))
        outcome.bags[name] = "written"
    storage.write_json(out_fs, posixpath.join(bags_root, PLAN_FILE),
                       {"strategy": cfg.bagging.strategy, "request": request, "bags": found,
                        "weights": weights, "left_out": left_out,
                        "rows": {"read": outcome.read, "kept": outcome.kept}})
    return outcome


def _finish_quarantine(cfg: BoomConfig, out_fs, results: list[FileResult], quarantine_tmp: str,
                       quarantine_final: str) -> BagOutcome:
    """Counts of a processed corpus; writes the quarantine into place, then checks the budget."""
    read = sum(r.read for r in results)
    kept = sum(r.kept for r in results)
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(r.bad)
    outcome = BagOutcome(bags={}, read=read, kept=kept, quarantined=read - kept,
                         reasons=dict(sorted(reasons.items())))
    # The quarantine is always kept, also (above all) when the stage fails because of it.
    storage.write_json(out_fs, posixpath.join(quarantine_tmp, "summary.json"),
                       {"read": read, "kept": kept, "quarantined": read - kept, "reasons": outcome.reasons,
                        "files": {r.source: r.bad for r in results if r.bad}})
    storage.remove(out_fs, quarantine_final)
    storage.move_dir(out_fs, quarantine_tmp, quarantine_final)
    _check_bad_fraction(cfg, read, kept, outcome.reasons, posixpath.join(cfg.workdir, "quarantine"))
    return outcome


def _check_bad_fraction(cfg: BoomConfig, read: int, kept: int, reasons: dict[str, int] | None,
                        quarantine: str) -> None:
    if read == 0:
        raise TooManyBadRows(f"{cfg.corpus.path}: the corpus has no rows")
    bad_fraction = (read - kept) / read
    if bad_fraction > cfg.corpus.max_bad_fraction:
        detail = f": {_reason_text(reasons)}" if reasons else ""
        raise TooManyBadRows(
            f"{read - kept} of {read} rows ({bad_fraction:.2%}) are bad, more than "
            f"corpus.max_bad_fraction={cfg.corpus.max_bad_fraction}{detail}. "
            f"Each bad row, with its file, line and reason, is in {quarantine}/")


def _reason_text(reasons: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (reasons or {}).items()) or "none"


def format_summary(cfg: BoomConfig, outcome: BagOutcome) -> str:
    """Rows read / kept / quarantined and one line per bag, for the console."""
    lines = []
    if outcome.read:
        lines.append(f"rows read {outcome.read}, kept {outcome.kept}, quarantined {outcome.quarantined}"
                     + (f" ({_reason_text(outcome.reasons)})" if outcome.quarantined else ""))
    lines.append(f"{'bag':<10} {'ratio':>6} {'rows':>10}  status")
    for name, state in outcome.bags.items():
        manifest = read_manifest(bag_dir(cfg.workdir, name)) or {}
        rows = manifest.get("rows", {}).get("selected", "?")
        lines.append(f"{name:<10} {manifest.get('ratio') or '':>6} {rows:>10}  {state}")
    lines.append(f"bags in {posixpath.join(cfg.workdir, 'bags')}/")
    return "\n".join(lines)
