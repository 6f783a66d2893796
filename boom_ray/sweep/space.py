"""What a sweep searches and how it is named: the trial's merge request, checks that fail before
Tune starts, the search space and algorithm, the experiment key, and the trial table."""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow.fs as pafs

from boom_ray.config import MergeSpec, BoomConfig
from boom_ray.errors import BoomError
from boom_ray.eval.results import AGGREGATES
from boom_ray.eval.suites import Suite
from boom_ray.merge.executor import check_inputs
from boom_ray.merge.io import index_model
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import MergeRequest, fingerprint, validated
from boom_ray.merge.stage import run_requests
from boom_ray.model.settings import resolve_model_path
from boom_ray.runtime import storage

METRIC = "score"
BEST = "best"
SWEEP_JSON = "sweep.json"
TRIAL_MODEL = "model"


class SweepError(BoomError):
    """A sweep that cannot run or finish; the message says what to change."""


def trial_resources(cfg: BoomConfig) -> dict[str, float]:
    """One trial's Tune bundle: `sweep.trial_cpus`, plus `eval.encoder_gpus` where the trial embeds
    the dev suites on a GPU (it embeds them itself, in its own process)."""
    resources = {"cpu": float(cfg.sweep.trial_cpus)}
    if cfg.eval.encoder_gpus > 0:
        resources["gpu"] = float(cfg.eval.encoder_gpus)
    return resources


def merge_request(cfg: BoomConfig, method: str, weights: dict[str, float]) -> MergeRequest:
    """The request of one trial: the bags with these weights, merged by `method`.

    Base model, parameters and dtype come from the first `merge.merges` entry of that method;
    a method that needs a base and has none there merges on top of `model.name_or_path`."""
    template = next((m for m in cfg.merge.merges if m.method == method), None)
    base = template.base_model if template else None
    if base is None and get_method(method).base == "required":
        base = resolve_model_path(cfg.model.name_or_path)
    spec = MergeSpec(name="sweep-trial", method=method, weights=weights, base_model=base,
                     parameters=dict(template.parameters) if template else {},
                     dtype=template.dtype if template else None)
    one = cfg.model_copy(update={"merge": cfg.merge.model_copy(update={"merges": [spec]})})
    return run_requests(one)[0][1]


SUITE_METRICS: dict[str, tuple[str, ...]] = {
    "retrieval": ("ndcg@10", "mrr@10", "recall@100", "num_queries", "corpus_size"),
    "sts": ("spearman", "pearson", "num_pairs"),
    "classification": ("accuracy", "f1_macro", "num_test"),
    "clustering": ("v_measure", "num_clusters", "num_texts"),
}
"""The metrics a suite of each type reports (eval/evaluators.py; tests/sweep holds the two together)."""
_DOMAIN = {"id_mean": ("in", "in-domain"), "ood_mean": ("out", "out-of-domain")}


def check_objective(objective: str, suites: Sequence[Suite]) -> None:
    """Fail before the first trial when `eval.results.score` could not score `objective` on these
    dev suites (no suite of its domain or name, or none that reports its metric): otherwise every
    trial runs, merges and embeds, and only then fails."""
    where, _, metric = objective.partition("/")
    metric = metric or "main"
    listed = ", ".join(f"{s.name} ({s.type}, {s.domain})" for s in suites)
    if where in _DOMAIN:
        domain, label = _DOMAIN[where]
        chosen, scope = [s for s in suites if s.domain == domain], f"no {label} dev suite reports"
        if not chosen:
            raise SweepError(f"sweep.objective {objective!r}: no dev suite is {label} (eval.dev_suites: {listed}); "
                             f"tag one `domain: {domain}` or choose another objective")
    elif where == "mean":
        chosen, scope = list(suites), "no dev suite reports"
    else:
        chosen, scope = [s for s in suites if s.name == where], f"dev suite {where!r} does not report"
        if not chosen:
            raise SweepError(f"sweep.objective {objective!r}: no dev suite named {where!r} (aggregates: "
                             f"{', '.join(AGGREGATES)}; eval.dev_suites: {listed})")
    if metric == "main" or any(s.type not in SUITE_METRICS or metric in SUITE_METRICS[s.type] for s in chosen):
        return
    reported = sorted({m for s in chosen for m in SUITE_METRICS[s.type]})
    raise SweepError(f"sweep.objective {objective!r}: {scope} {metric!r} (eval.dev_suites: {listed}; metrics there: main, "
                     f"{', '.join(reported)})")


def check_methods(cfg: BoomConfig, bags: list[str]) -> None:
    """Fail before Tune starts when a method cannot merge these bags (base, counts, parameters,
    a base whose tensors differ from the bag exports')."""
    for method in cfg.sweep.methods:
        request = merge_request(cfg, method, {b: 1.0 for b in bags})
        try:
            validated(request)
        except BoomError as exc:
            raise SweepError(f"sweep.methods: {method} cannot merge bags {bags}: {exc}") from None
        if request.base_model:
            _check_base_matches(cfg, method, request)


def _check_base_matches(cfg: BoomConfig, method: str, request: MergeRequest) -> None:
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


def default_grid(cfg: BoomConfig) -> list[float]:
    lo, hi = cfg.sweep.weight_range
    return list(cfg.sweep.weight_grid or ([lo] if lo == hi else [lo, hi]))


def search_space(cfg: BoomConfig, bags: list[str]) -> dict[str, Any]:
    """Tune param space: {"method": ..., "weights": {bag: ...}} as `sweep.search` asks."""
    from ray import tune  # lazy: ray

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


def searcher(cfg: BoomConfig):
    """Tune search algorithm for optuna / hyperopt (None for grid and random)."""
    sweep = cfg.sweep
    if sweep.search in ("grid", "random"):
        return None
    try:
        if sweep.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch as Search  # lazy: ray
            import optuna  # noqa: F401  # lazy: optuna, optional
        else:
            from ray.tune.search.hyperopt import HyperOptSearch as Search  # lazy: ray
            import hyperopt  # noqa: F401  # lazy: hyperopt, optional
    except ImportError:
        raise SweepError(f"sweep.search={sweep.search} needs the {sweep.search} package "
                         f"(pip install {sweep.search}); or use search: random / grid") from None
    alg = Search(metric=METRIC, mode=sweep.mode)
    if sweep.max_concurrent:
        from ray.tune.search import ConcurrencyLimiter  # lazy: ray

        alg = ConcurrencyLimiter(alg, max_concurrent=sweep.max_concurrent)
    return alg


def sweep_key(cfg: BoomConfig, bags: dict[str, tuple[str, float]]) -> str:
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
