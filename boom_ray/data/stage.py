"""`boom bag`: the corpus -> bags stage, run as a Ray Data job.

Ray Data schedules one task per source file (one file is one task of the corpus) with the
configured fractional CPUs, streams their results back for the progress bar, and retries a
failed task; each task validates, quarantines and samples its file (`bagging.py`). The driver
then checks the bad-row budget, writes one manifest per bag and renames each finished bag into
`<workdir>/bags/<bag>/`. A bag whose manifest matches the request is left alone.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass

from boom_ray import __version__, storage
from boom_ray.config import RunConfig, bag_name
from boom_ray.data import corpus as corpus_io
from boom_ray.data.bagging import BagRequest, FileResult, bag_source_file
from boom_ray.data.bags import bag_dir, read_manifest
from boom_ray.errors import BoomError

SAMPLING_VERSION = 1
"""Bumped whenever the sampling algorithm changes, so old bags are not taken as matching."""


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


def bag_request(cfg: RunConfig, ratio: float, source_fingerprint: str) -> dict:
    """What a bag is made from; a bag on disk is reused only when its manifest has the same."""
    return {"ratio": ratio, "seed": cfg.bagging.seed, "nested": cfg.bagging.nested,
            "source_fingerprint": source_fingerprint, "sampling_version": SAMPLING_VERSION}


def _process_files(cfg: RunConfig, files: list[corpus_io.SourceFile], requests: list[BagRequest],
                   quarantine_tmp: str, staging_tmp: str, show_progress: bool) -> list[FileResult]:
    import ray.data
    from tqdm import tqdm

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

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar of our own, in rows of corpus files
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


def _manifest(cfg: RunConfig, name: str, ratio: float, request: dict, files: list[corpus_io.SourceFile],
              results: list[FileResult]) -> dict:
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
        "boom_ray_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_bagging(cfg: RunConfig, *, force: bool = False, show_progress: bool = True) -> BagOutcome:
    """Bag the corpus per `cfg.bagging`; returns what was written and the row counts."""
    from boom_ray.ray_runtime import init_ray

    fs_in, files = corpus_io.discover(cfg.corpus.path, cfg.corpus.format)
    source_fp = corpus_io.fingerprint(fs_in, files)
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
    tmp = {name: storage.temp_name(posixpath.join(bags_root, name)) for name in todo}
    quarantine_final = posixpath.join(root, "quarantine")
    quarantine_tmp = storage.temp_name(quarantine_final)
    staging_tmp = storage.temp_name(posixpath.join(bags_root, "staging"))
    requests = [BagRequest(name, wanted[name], tmp[name]) for name in todo]
    try:
        results = _process_files(cfg, files, requests, quarantine_tmp, staging_tmp, show_progress)
        read = sum(r.read for r in results)
        kept = sum(r.kept for r in results)
        reasons: Counter[str] = Counter()
        for r in results:
            reasons.update(r.bad)
        outcome = BagOutcome(bags=status, read=read, kept=kept, quarantined=read - kept,
                             reasons=dict(sorted(reasons.items())))
        # The quarantine is always kept, also (above all) when the stage fails because of it.
        storage.write_json(out_fs, posixpath.join(quarantine_tmp, "summary.json"),
                           {"read": read, "kept": kept, "quarantined": read - kept,
                            "reasons": outcome.reasons,
                            "files": {r.source: r.bad for r in results if r.bad}})
        storage.remove(out_fs, quarantine_final)
        storage.move_dir(out_fs, quarantine_tmp, quarantine_final)
        _check_bad_fraction(cfg, read, kept, outcome.reasons, posixpath.join(cfg.workdir, "quarantine"))
        for name in todo:
            request = bag_request(cfg, wanted[name], source_fp)
            storage.write_json(out_fs, posixpath.join(tmp[name], "manifest.json"),
                               _manifest(cfg, name, wanted[name], request, files, results))
            final = bag_dir(root, name)
            storage.remove(out_fs, final)
            storage.move_dir(out_fs, tmp[name], final)
            status[name] = "written"
        return outcome
    finally:
        for path in [*tmp.values(), staging_tmp, quarantine_tmp]:
            storage.remove(out_fs, path)


def _check_bad_fraction(cfg: RunConfig, read: int, kept: int, reasons: dict[str, int] | None,
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


def format_summary(cfg: RunConfig, outcome: BagOutcome) -> str:
    """Rows read / kept / quarantined and one line per bag, for the console."""
    lines = []
    if outcome.read:
        lines.append(f"rows read {outcome.read}, kept {outcome.kept}, quarantined {outcome.quarantined}"
                     + (f" ({_reason_text(outcome.reasons)})" if outcome.quarantined else ""))
    lines.append(f"{'bag':<10} {'ratio':>6} {'rows':>10}  status")
    for name, state in outcome.bags.items():
        manifest = read_manifest(bag_dir(cfg.workdir, name)) or {}
        rows = manifest.get("rows", {}).get("selected", "?")
        lines.append(f"{name:<10} {manifest.get('ratio', ''):>6} {rows:>10}  {state}")
    lines.append(f"bags in {posixpath.join(cfg.workdir, 'bags')}/")
    return "\n".join(lines)
