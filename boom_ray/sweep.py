"""`boom sweep`: Ray Tune over the merge weights of a run's bags, scored on its dev suites.

    boom sweep --config run.yaml [--set sweep.num_samples=16]

Each trial merges the bag exports (`<workdir>/models/<bag>/`) with its own per-bag weights (and
method, when `sweep.methods` names several), streams the merge into its trial directory under
`<workdir>/sweep/<experiment>/`, evaluates it on `eval.dev_suites` (embedding in the trial's own
process) and reports `sweep.objective`. Trials reserve `sweep.trial_cpus` CPUs, the merge's
memory and `eval.encoder_gpus` GPUs, so Tune runs as many at once as the cluster holds, at most
`sweep.max_concurrent`.

The experiment name is a hash of everything that defines the sweep (search space, bags, suites,
objective, merge settings): re-running the same sweep after an interruption restores it
(`Tuner.restore`, errored trials resumed) and only runs what is missing; a changed sweep starts a
new experiment. At the end the best trial's model is moved (temp name + rename) to
`<workdir>/sweep/best/` with `sweep.json` inside (objective, mode, score, weights, method), and
the other trial models are deleted unless `sweep.keep_trial_models`.

Search: `grid` tries every combination of `sweep.weight_grid` (default: the two ends of
`sweep.weight_range`) per bag, once (num_samples is ignored: merges are deterministic);
`random` draws `num_samples` points, uniform in `weight_range` (or from `weight_grid` when
given); `optuna` / `hyperopt` (Tune's wrappers; the libraries are installed separately) pick
`num_samples` points from the same space, learning from the scores so far.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs

from boom_ray import storage
from boom_ray.config import MergeSpec, RunConfig
from boom_ray.errors import BoomError
from boom_ray.merge.stage import bag_dirs, is_done, run_requests
from boom_ray.merge.executor import check_inputs
from boom_ray.merge.io import index_model
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import MergeRequest, fingerprint
from boom_ray.merge.task import merge, task_memory

METRIC = "score"
BEST = "best"
SWEEP_JSON = "sweep.json"
TRIAL_MODEL = "model"


class SweepError(BoomError):
    """A sweep that cannot run or finish; the message says what to change."""


# ---------------------------------------------------------------------------------- pure parts
def merge_request(cfg: RunConfig, method: str, weights: dict[str, float]) -> MergeRequest:
    """The request of one trial: the bags with these weights, merged by `method`.

    Base model, parameters and dtype come from the first `merge.merges` entry of that method;
    a method that needs a base and has none there merges on top of `model.name_or_path`."""
    template = next((m for m in cfg.merge.merges if m.method == method), None)
    base = template.base_model if template else None
    if base is None and get_method(method).base == "required":
        from boom_ray.model.settings import resolve_model_path

        base = resolve_model_path(cfg.model.name_or_path)
    spec = MergeSpec(name="sweep-trial", method=method, weights=weights, base_model=base,
                     parameters=dict(template.parameters) if template else {},
                     dtype=template.dtype if template else None)
    one = cfg.model_copy(update={"merge": cfg.merge.model_copy(update={"merges": [spec]})})
    return run_requests(one)[0][1]


def check_methods(cfg: RunConfig, bags: list[str]) -> None:
    """Fail before Tune starts when a method cannot merge these bags (base, counts, parameters,
    a base whose tensors differ from the bag exports')."""
    for method in cfg.sweep.methods:
        request = merge_request(cfg, method, {b: 1.0 for b in bags})
        try:
            get_method(method).validate(len(request.models), request.base_model is not None,
                                        request.parameters, [m.parameters for m in request.models])
        except BoomError as exc:
            raise SweepError(f"sweep.methods: {method} cannot merge bags {bags}: {exc}") from None
        if request.base_model:
            _check_base_matches(cfg, method, request)


def _check_base_matches(cfg: RunConfig, method: str, request: MergeRequest) -> None:
    """Every trial would fail the merge's tensor check if the base is saved differently from the
    bag exports (the fallback, `model.name_or_path`, usually is: a raw HF checkpoint, not an
    export); say so once, with the fix. Remote inputs are left to each trial's check."""
    paths = [request.models[0].path, request.base_model]
    resolved = [storage.resolve(p) for p in paths]
    if not all(isinstance(fs, pafs.LocalFileSystem) for fs, _ in resolved):
        return
    try:
        check_inputs(paths, [index_model(local) for _, local in resolved])
    except BoomError as exc:
        configured = any(m.method == method and m.base_model for m in cfg.merge.merges)
        where = "its base_model" if configured else f"model.name_or_path ({cfg.model.name_or_path}), as no " \
            f"merge.merges entry of {method} names a base_model"
        raise SweepError(f"sweep.methods: {method} merges on top of {where}, which does not match the bag "
                         f"exports: {exc}. Give a {method} entry in merge.merges a base_model saved like the "
                         "exports (for example one of the bag models)") from None


def default_grid(cfg: RunConfig) -> list[float]:
    lo, hi = cfg.sweep.weight_range
    return list(cfg.sweep.weight_grid or ([lo] if lo == hi else [lo, hi]))


def search_space(cfg: RunConfig, bags: list[str]) -> dict[str, Any]:
    """Tune param space: {"method": ..., "weights": {bag: ...}} as `sweep.search` asks."""
    from ray import tune

    sweep, methods = cfg.sweep, list(cfg.sweep.methods)
    lo, hi = sweep.weight_range
    if lo > hi or lo < 0:
        raise SweepError(f"sweep.weight_range: expected 0 <= low <= high, got {list(sweep.weight_range)}")
    if sweep.search == "grid":
        grid = default_grid(cfg)
        weights = {b: tune.grid_search(grid) for b in bags}
        method = tune.grid_search(methods) if len(methods) > 1 else methods[0]
    else:
        if sweep.weight_grid:
            weights = {b: tune.choice(list(sweep.weight_grid)) for b in bags}
        else:
            weights = {b: tune.uniform(lo, hi) if hi > lo else lo for b in bags}
        method = tune.choice(methods) if len(methods) > 1 else methods[0]
    return {"method": method, "weights": weights}


def searcher(cfg: RunConfig):
    """Tune search algorithm for optuna / hyperopt (None for grid and random)."""
    sweep = cfg.sweep
    if sweep.search in ("grid", "random"):
        return None
    try:
        if sweep.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch as Search
            import optuna  # noqa: F401
        else:
            from ray.tune.search.hyperopt import HyperOptSearch as Search
            import hyperopt  # noqa: F401
    except ImportError:
        raise SweepError(f"sweep.search={sweep.search} needs the {sweep.search} package "
                         f"(pip install {sweep.search}); or use search: random / grid") from None
    alg = Search(metric=METRIC, mode=sweep.mode)
    if sweep.max_concurrent:
        from ray.tune.search import ConcurrencyLimiter

        alg = ConcurrencyLimiter(alg, max_concurrent=sweep.max_concurrent)
    return alg


def sweep_key(cfg: RunConfig, bags: dict[str, tuple[str, float]]) -> str:
    """Hash of what defines the sweep: same key = same experiment, which a re-run resumes.

    Resources (trial CPUs, concurrency, merge memory) are left out, so a sweep whose trials failed
    for lack of them resumes after the fix; the bags' weight fingerprints are in, so retrained
    bags start a new sweep instead of resuming stale scores."""
    what = {"sweep": cfg.sweep.model_dump(exclude={"keep_trial_models", "max_concurrent", "trial_cpus"}),
            "bags": {b: [p, fingerprint(p)] for b, (p, _) in sorted(bags.items())},
            "dev_suites": [s.model_dump() for s in cfg.eval.dev_suites],
            "merges": [m.model_dump() for m in cfg.merge.merges if m.method in cfg.sweep.methods],
            "base": cfg.model.name_or_path}
    return storage.stable_hash(what, 10)


def format_trials(trials: list[dict[str, Any]], bags: list[str], objective: str) -> str:
    """Aligned text table: one row per trial, best first."""
    header = ["trial", "method", *bags, objective, "status"]
    rows = [[t["trial"], t["method"] or "-", *(f"{t['weights'][b]:.4f}" if b in t["weights"] else "-" for b in bags),
             "-" if t["score"] is None else f"{t['score']:.4f}", t["status"]] for t in trials]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the trial
def make_trainable(cfg: RunConfig, experiment_uri: str):
    """The Tune function trainable of this sweep (a closure: cloudpickled with `cfg`)."""

    # Embed in the trial's own process and resources: an encoder actor pool started from inside a
    # trial would wait for CPUs/GPUs the running trials hold (on a small cluster, forever).
    trial_eval = cfg.eval.model_copy(update={"ray_min_texts": 1 << 62})

    def sweep_trial(config: dict[str, Any]) -> None:
        import torch
        from ray import tune

        from boom_ray.eval.evaluate import evaluate_model
        from boom_ray.eval.results import score

        torch.set_num_threads(max(1, int(cfg.sweep.trial_cpus)))
        weights = {b: float(w) for b, w in config["weights"].items()}
        request = merge_request(cfg, config["method"], weights)
        # the trial's directory on the sweep's storage (Tune's local trial dir may be on another node)
        out = storage.join(experiment_uri, posixpath.basename(tune.get_context().get_trial_dir().rstrip("/")),
                           TRIAL_MODEL)
        if not is_done(out, request):  # a restored trial whose merge finished keeps it
            merge(request, out, cfg.merge, force=True, progress=False)
        results = evaluate_model(out, cfg.eval.dev_suites, trial_eval)
        tune.report({METRIC: score(results, cfg.sweep.objective), "model": out, "method": config["method"],
                     **{f"weight/{b}": w for b, w in weights.items()}})

    return sweep_trial


# ------------------------------------------------------------------------------------- driver
def _trial_rows(result_grid, bags: list[str], experiment: str) -> list[dict[str, Any]]:
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        conf = r.config or {}
        dirname = posixpath.basename(r.path.rstrip("/"))
        rows.append({"trial": m.get("trial_id") or dirname,
                     "method": conf.get("method"),
                     "weights": {b: float(conf.get("weights", {}).get(b)) for b in bags
                                 if conf.get("weights", {}).get(b) is not None},
                     "score": m.get(METRIC) if r.error is None else None,
                     # also where a trial merged and then failed: its model is cleaned up all the same
                     "model": storage.join(experiment, dirname, TRIAL_MODEL),
                     "status": "error" if r.error is not None else ("done" if METRIC in m else "no result"),
                     "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:300]})
    return rows


def _keep_best(cfg: RunConfig, best: dict[str, Any], sweep_root: str, info: dict[str, Any]) -> str:
    """Put the best model at `<sweep_root>/best/` (temp + rename) with sweep.json; returns its URI."""
    fs, root = storage.resolve(sweep_root)
    final = storage.join(root, BEST)
    current = storage.read_json_or_none(fs, storage.join(final, SWEEP_JSON))
    if current is not None and {k: current.get(k) for k in ("experiment", "trial")} == \
            {k: info[k] for k in ("experiment", "trial")}:
        return storage.join(sweep_root, BEST)  # already kept by an earlier run of this sweep
    src_fs, src = storage.resolve(best["model"]) if best.get("model") else (fs, "")
    with storage.staged_dir(fs, final) as tmp:  # replaces an older best on success
        if src and storage.is_dir(src_fs, src) and type(src_fs) is type(fs):
            if cfg.sweep.keep_trial_models:
                pafs.copy_files(src, tmp, source_filesystem=src_fs, destination_filesystem=fs)
            else:
                storage.move_dir(fs, src, tmp)
        else:  # the trial model went missing (an earlier interrupted finish): merge it again
            request = merge_request(cfg, best["method"], best["weights"])
            merge(request, storage.join(sweep_root, posixpath.basename(tmp)), cfg.merge, force=True, progress=False)
        storage.write_json(fs, storage.join(tmp, SWEEP_JSON), info)
    return storage.join(sweep_root, BEST)


def run_sweep(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) the sweep of `cfg`; returns a summary: experiment, objective, mode, best
    (trial, method, weights, score, model), trials (one dict per trial)."""
    from ray import tune

    from boom_ray.eval.evaluate import load_suites
    from boom_ray.ray_runtime import init_ray

    if not cfg.eval.dev_suites:
        raise SweepError("eval.dev_suites is empty: the sweep scores each merge on dev suites; list at least one")
    load_suites(cfg.eval.dev_suites)  # a broken suite fails now, not in every trial
    bags = bag_dirs(cfg)
    fs_missing = [f"{b} ({p})" for b, (p, _) in bags.items() if not storage.is_dir(*storage.resolve(p))]
    if fs_missing:
        raise SweepError(f"bag models not found: {', '.join(fs_missing)}; train the bags first (boom train)")
    names = list(bags)
    check_methods(cfg, names)
    space = search_space(cfg, names)
    alg = searcher(cfg)

    sweep_root = storage.join(cfg.workdir, "sweep")
    name = f"sweep-{sweep_key(cfg, bags)}"
    experiment = storage.join(sweep_root, name)
    fs, root = storage.resolve(sweep_root)
    fs.create_dir(root, recursive=True)

    init_ray(cfg.ray)
    resources = {"cpu": cfg.sweep.trial_cpus, "memory": task_memory(cfg.merge)}
    if cfg.eval.encoder_gpus > 0:  # the trial embeds the dev suites itself, on its own GPU share
        resources["gpu"] = cfg.eval.encoder_gpus
    trainable = tune.with_resources(make_trainable(cfg, experiment), resources)
    if tune.Tuner.can_restore(experiment):
        print(f"resuming sweep {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=cfg.sweep.mode, search_alg=alg,
                num_samples=1 if cfg.sweep.search == "grid" else cfg.sweep.num_samples,
                max_concurrent_trials=None if alg is not None else cfg.sweep.max_concurrent,
                reuse_actors=True),  # a trial process imports torch/transformers once, not per trial
            run_config=tune.RunConfig(name=name, storage_path=sweep_root, verbose=1))
    grid = tuner.fit()

    trials = _trial_rows(grid, names, experiment)
    done = [t for t in trials if t["status"] == "done"]
    sign = 1 if cfg.sweep.mode == "max" else -1
    trials.sort(key=lambda t: (t["score"] is None, -sign * (t["score"] or 0.0), t["trial"]))  # ties: first trial
    print(format_trials(trials, names, cfg.sweep.objective))
    for t in trials:
        if t["error"]:
            print(f"trial {t['trial']} failed: {t['error']}")
    if not done:
        raise SweepError(f"no trial of {experiment} finished; see the errors above (and the trial logs there)")
    best = trials[0]
    info = {"objective": cfg.sweep.objective, "mode": cfg.sweep.mode, "score": best["score"],
            "weights": best["weights"], "method": best["method"], "trial": best["trial"],
            "experiment": experiment, "trials": len(trials), "finished": len(done)}
    best_uri = _keep_best(cfg, best, sweep_root, info)
    if not cfg.sweep.keep_trial_models:
        for t in trials:
            if t is not best:
                tfs, tpath = storage.resolve(t["model"])
                storage.remove(tfs, tpath)
    return {**info, "best_model": best_uri, "trials": trials}
