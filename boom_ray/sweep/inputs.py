"""What every trial of a sweep shares: the models' tensors, held once per node in Ray's object
store, and the per-tensor statistics of the methods whose statistics do not depend on the weights,
computed once per sweep and kept beside the experiment (`<experiment>/statistics/<method>.npz`),
so a resumed sweep does not compute them again.

A model's tensors are loaded by a Ray task and stay in the object store in their stored dtype;
a trial's `ray.get` maps them without a copy (numpy arrays are zero-copy there), and trials on
another node pull one copy to that node. Statistics are computed by one task per method from the
same objects.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from boom_ray.runtime import storage
from boom_ray.config import BoomConfig
from boom_ray.merge.in_memory import StoredTensor, load_model_tensors, sweep_statistics
from boom_ray.merge.methods import Settings, get_method
from boom_ray.merge.request import validated
from boom_ray.sweep.space import merge_request

STATISTICS = "statistics"


@dataclass
class SweepInputs:
    """Object refs: model path -> its tensors, method -> its cached statistics (None: per trial)."""

    models: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)


def load_tensors(path: str) -> dict[str, StoredTensor]:
    """Every tensor of the model at `path` (local or URI), as stored."""
    return load_model_tensors(storage.local_dir(path))


def method_statistics(method_name: str, settings: Settings, base: dict[str, StoredTensor] | None,
                      *models: dict[str, StoredTensor]) -> dict[str, list[np.ndarray]]:
    """The cached statistics of one method (models last, so Ray resolves each ref argument)."""
    return sweep_statistics(get_method(method_name), settings, list(models), base)


def to_npz(stats: dict[str, list[np.ndarray]]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"{name}|{p}": total for name, totals in stats.items() for p, total in enumerate(totals)})
    return buf.getvalue()


def from_npz(data: bytes) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    with np.load(io.BytesIO(data)) as npz:
        for key in sorted(npz.files, key=lambda k: (k.rsplit("|", 1)[0], int(k.rsplit("|", 1)[1]))):
            out.setdefault(key.rsplit("|", 1)[0], []).append(npz[key])
    return out


def prepare_inputs(cfg: BoomConfig, experiment: str, bags: list[str], cpus: float) -> SweepInputs:
    """Load every model the sweep's methods read into the object store and gather the cached
    statistics (from `<experiment>/statistics/` or computed now and written there)."""
    import ray  # lazy: ray

    load = ray.remote(load_tensors).options(num_cpus=cpus)
    compute = ray.remote(method_statistics).options(num_cpus=cpus)
    inputs = SweepInputs()
    fs, root = storage.resolve(experiment)
    for method_name in cfg.sweep.methods:
        request = merge_request(cfg, method_name, {b: 1.0 for b in bags})
        paths = [m.path for m in request.models] + ([request.base_model] if request.base_model else [])
        for path in paths:
            if path not in inputs.models:
                inputs.models[path] = load.remote(path)
        method, settings = validated(request)
        if not method.weight_free_statistics:
            inputs.statistics[method_name] = None
            continue
        saved = storage.join(root, STATISTICS, f"{method_name}.npz")
        if storage.exists(fs, saved):
            with fs.open_input_stream(saved) as f:
                inputs.statistics[method_name] = ray.put(from_npz(f.read()))
            continue
        ref = compute.remote(method_name, settings,
                             inputs.models[request.base_model] if request.base_model else None,
                             *[inputs.models[m.path] for m in request.models])
        storage.write_bytes(fs, saved, to_npz(ray.get(ref)))
        inputs.statistics[method_name] = ref
    return inputs
