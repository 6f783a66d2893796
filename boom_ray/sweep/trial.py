"""One sweep trial: merge the shared bag tensors with the trial's weights in memory, load the result
into an embedder that stays resident in the trial process, and score it on the dev suites.

Nothing is written: the trial's model exists only as the weights of the resident embedder (one
per trial process, reused by the next trial that process runs). With `sweep.scheduler: asha` a
trial first reports its score on a seeded sample of the dev suites (`sweep.sample_fraction`) and
is scored in full only if ASHA keeps it.
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np

from boom_ray.config import BoomConfig
from boom_ray.eval.dev_sample import sample_suite
from boom_ray.eval.evaluate import evaluate_model, load_suites
from boom_ray.eval.results import score
from boom_ray.merge.in_memory import merge_in_memory
from boom_ray.merge.request import validated
from boom_ray.merge.task import merge
from boom_ray.runtime import storage
from boom_ray.sweep.inputs import SweepInputs
from boom_ray.sweep.space import METRIC, TRIAL_MODEL, merge_request

SAMPLE, FULL = "sample", "full"
_RESIDENT: dict[str, Any] = {}
_SUITES: dict[str, Any] = {}


def resident_embedder(path: str):
    """The trial process's embedder for models shaped like `path` (loaded once per process)."""
    if path not in _RESIDENT:
        from boom_ray.model.embedder import Embedder  # lazy: torch, transformers

        _RESIDENT.clear()  # at most one model resident per process
        _RESIDENT[path] = Embedder.from_pretrained(path)
    return _RESIDENT[path]


def _parameter(params: dict, name: str):
    target = params.get(name)
    if target is None:
        raise KeyError(f"merged tensor {name!r} is not a parameter of the resident model")
    return target


def load_weights(embedder):
    """A sink for merge_in_memory that copies each merged tensor into the embedder's parameter of
    that name (and drops it), so one merged tensor at a time is in memory."""
    import torch  # lazy: torch, only inside a trial

    params = embedder.model.state_dict()

    def sink(name: str, array) -> None:
        target = _parameter(params, name)
        with torch.no_grad():
            target.copy_(torch.from_numpy(array).reshape(target.shape))

    return sink


def parameter_targets(embedder):
    """`targets` for merge_in_memory: each parameter's storage as a flat numpy array and its
    safetensors dtype, so merged blocks land in the resident model directly (no merged float32
    tensor, no second copy). None for parameters numpy cannot alias (off the CPU, not
    contiguous): those go through `load_weights`."""
    import torch  # lazy: torch, only inside a trial

    params = embedder.model.state_dict()
    views = {torch.float32: (None, "F32"), torch.float16: (None, "F16"), torch.bfloat16: (torch.int16, "BF16")}

    def target(name: str):
        t = _parameter(params, name)
        if t.device.type != "cpu" or not t.is_contiguous():
            return None
        view, dtype = views.get(t.dtype, (None, None))
        flat = t.detach().reshape(-1)
        if view is not None:  # numpy has no bfloat16: its bits as uint16
            return flat.view(view).numpy().view(np.uint16), dtype
        return flat.numpy(), dtype  # dtype None: a non-float buffer, copied as stored

    return target


def dev_suites(cfg: BoomConfig, stage: str):
    """The dev suites, loaded once per process; sampled for the first ASHA rung."""
    if stage not in _SUITES:
        full = _SUITES.setdefault(FULL, load_suites(cfg.eval.dev_suites))
        _SUITES[SAMPLE] = [sample_suite(s, cfg.sweep.sample_fraction, seed=cfg.bagging.seed) for s in full]
    return _SUITES[stage]


def make_trainable(cfg: BoomConfig, experiment_uri: str):
    """The Tune function trainable of this sweep (a closure: cloudpickled with `cfg`); its
    `inputs` come through `tune.with_parameters`."""
    # Embed in the trial's own process and resources: an encoder actor pool started from inside a
    # trial would wait for CPUs/GPUs the running trials hold (on a small cluster, forever).
    trial_eval = cfg.eval.model_copy(update={"ray_min_texts": 1 << 62})

    def sweep_trial(config: dict[str, Any], inputs: SweepInputs) -> None:
        import ray  # lazy: ray
        import torch  # lazy: torch
        from ray import tune  # lazy: ray

        torch.set_num_threads(max(1, int(cfg.sweep.trial_cpus)))
        weights = {b: float(w) for b, w in config["weights"].items()}
        method_name = config["method"]
        request = merge_request(cfg, method_name, weights)
        method, settings = validated(request)
        models = [ray.get(inputs.models[m.path]) for m in request.models]
        base = ray.get(inputs.models[request.base_model]) if request.base_model else None
        stats_ref = inputs.statistics.get(method_name)
        statistics = ray.get(stats_ref) if stats_ref is not None else None
        embedder = resident_embedder(request.models[0].path)
        merge_in_memory(method, settings, models, base, statistics, sink=load_weights(embedder),
                        targets=parameter_targets(embedder), threads=max(1, int(cfg.sweep.trial_cpus)))
        report = {"method": method_name, **{f"weight/{b}": w for b, w in weights.items()}}
        if cfg.sweep.keep_trial_models:  # written by the streaming merge from the same statistics
            out = storage.join(experiment_uri, posixpath.basename(tune.get_context().get_trial_dir().rstrip("/")),
                               TRIAL_MODEL)
            merge(request, out, cfg.merge, force=True, progress=False, statistics=statistics)
            report["model"] = out
        stages = [SAMPLE, FULL] if cfg.sweep.scheduler == "asha" else [FULL]
        for stage in stages:
            results = evaluate_model(request.models[0].path, dev_suites(cfg, stage), trial_eval, embedder=embedder)
            tune.report({METRIC: score(results, cfg.sweep.objective), "stage": stage, **report})

    return sweep_trial
