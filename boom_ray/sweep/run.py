"""`boom sweep` (run_sweep): Ray Tune over the merge weights of a run's bags, scored on its dev suites.

    boom sweep --config run.yaml [--set sweep.num_samples=16]

Before any trial: the dev suites are read and checked against `sweep.objective`, every method is
checked against the bags, the models' tensors go into Ray's object store once and the
weight-free statistics are computed once (sweep/inputs.py). Each trial then merges in memory and
scores a resident embedder (sweep/trial.py): no trial writes a checkpoint. Trials reserve
`sweep.trial_cpus` CPUs and `eval.encoder_gpus` GPUs, so Tune runs as many at once as the cluster
holds, at most `sweep.max_concurrent`.

The experiment name is a hash of everything that defines the sweep (search space, bags, suites,
objective, merge settings): re-running the same sweep after an interruption restores it
(`Tuner.restore`, errored trials resumed) and only runs what is missing; a changed sweep starts a
new experiment. At the end the best trial's weights are merged once more by the streaming merge,
from the same cached statistics, into `<workdir>/sweep/best/` (staged, then renamed) with
`sweep.json` inside (objective, mode, score, weights, method): bit for bit the model the trial
scored.

Search: `grid` tries every combination of `sweep.weight_grid` (default: the two ends of
`sweep.weight_range`) per bag, once (num_samples is ignored: merges are deterministic);
`random` draws `num_samples` points, uniform in `weight_range` (or from `weight_grid` when
given); `optuna` / `hyperopt` (Tune's wrappers; the libraries are installed separately) pick
`num_samples` points from the same space, learning from the scores so far. `sweep.scheduler:
asha` stops trials early on a sample of the dev suites (Tune's ASHA, two rungs).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs

from boom_ray.config import BoomConfig
from boom_ray.eval.evaluate import load_suites
from boom_ray.merge.stage import bag_dirs
from boom_ray.merge.task import merge
from boom_ray.runtime import storage
from boom_ray.runtime.cluster import check_bundle_fits
from boom_ray.runtime.ray_session import init_ray, joins_cluster
from boom_ray.sweep.inputs import prepare_inputs
from boom_ray.sweep.space import (BEST, METRIC, SWEEP_JSON, TRIAL_MODEL, SweepError, check_methods, check_objective,
                                  format_trials, merge_request, search_space, searcher, sweep_key, trial_resources)
from boom_ray.sweep.trial import FULL, make_trainable


def _trial_rows(result_grid, bags: list[str], experiment: str, keep_models: bool) -> list[dict[str, Any]]:
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        conf = r.config or {}
        dirname = posixpath.basename(r.path.rstrip("/"))
        full = r.error is None and m.get("stage") == FULL and METRIC in m
        status = "error" if r.error is not None else ("done" if full else "stopped early" if METRIC in m else "no result")
        rows.append({"trial": m.get("trial_id") or dirname,
                     "method": conf.get("method"),
                     "weights": {b: float(conf.get("weights", {}).get(b)) for b in bags
                                 if conf.get("weights", {}).get(b) is not None},
                     "score": m.get(METRIC) if r.error is None else None,
                     "full": full,
                     "model": storage.join(experiment, dirname, TRIAL_MODEL) if keep_models else None,
                     "status": status,
                     "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:300]})
    return rows


def _keep_best(cfg: BoomConfig, best: dict[str, Any], sweep_root: str, info: dict[str, Any],
               statistics: dict | None) -> str:
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
            pafs.copy_files(src, tmp, source_filesystem=src_fs, destination_filesystem=fs)
        else:
            request = merge_request(cfg, best["method"], best["weights"])
            merge(request, storage.join(sweep_root, posixpath.basename(tmp)), cfg.merge, force=True,
                  progress=False, statistics=statistics)
        storage.write_json(fs, storage.join(tmp, SWEEP_JSON), info)
    return storage.join(sweep_root, BEST)


def _scheduler(cfg: BoomConfig):
    if cfg.sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler  # lazy: ray

    # two rungs: the sample score (iteration 1) and the full score (iteration 2)
    return ASHAScheduler(time_attr="training_iteration", max_t=2, grace_period=1,
                         reduction_factor=cfg.sweep.asha_reduction_factor)


def run_sweep(cfg: BoomConfig) -> dict[str, Any]:
    """Run (or resume) the sweep of `cfg`; returns a summary: experiment, objective, mode, best
    (trial, method, weights, score, model), trials (one dict per trial)."""
    import ray  # lazy: ray
    from ray import tune  # lazy: ray

    if not cfg.eval.dev_suites:
        raise SweepError("eval.dev_suites is empty: the sweep scores each merge on dev suites; list at least one")
    # a broken suite, or an objective they cannot score, fails now, not in every trial
    check_objective(cfg.sweep.objective, load_suites(cfg.eval.dev_suites))
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
    resources = trial_resources(cfg)
    check_bundle_fits(resources, "sweep.trial_cpus / eval.encoder_gpus", cfg.ray.cluster_config,
                      local_ray=not joins_cluster(cfg.ray))
    inputs = prepare_inputs(cfg, experiment, names, cpus=cfg.sweep.trial_cpus)
    trainable = tune.with_resources(tune.with_parameters(make_trainable(cfg, experiment), inputs=inputs), resources)
    if tune.Tuner.can_restore(experiment):
        print(f"resuming sweep {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=cfg.sweep.mode, search_alg=alg, scheduler=_scheduler(cfg),
                num_samples=1 if cfg.sweep.search == "grid" else cfg.sweep.num_samples,
                max_concurrent_trials=None if alg is not None else cfg.sweep.max_concurrent,
                reuse_actors=True),  # a trial process keeps torch and its resident embedder
            run_config=tune.RunConfig(name=name, storage_path=sweep_root, verbose=1))
    grid = tuner.fit()

    trials = _trial_rows(grid, names, experiment, cfg.sweep.keep_trial_models)
    done = [t for t in trials if t["status"] == "done"]
    sign = 1 if cfg.sweep.mode == "max" else -1
    # scored in full first, then best score; ties: first trial
    trials.sort(key=lambda t: (not t["full"], t["score"] is None, -sign * (t["score"] or 0.0), t["trial"]))
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
    stats_ref = inputs.statistics.get(best["method"])
    best_uri = _keep_best(cfg, best, sweep_root, info, ray.get(stats_ref) if stats_ref is not None else None)
    return {**info, "best_model": best_uri, "trials": trials}
