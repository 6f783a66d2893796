"""The merge-method protocol (validate / start / statistics / finish / combine) and its shared
helpers; the package docstring says how the executor drives it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from boom_ray.errors import BoomError

REQUIRED = object()


class MergeMethodError(BoomError):
    """Parameters a merge method cannot use, or a tensor it cannot merge."""


@dataclass
class TensorState:
    """What a method knows about the tensor being merged: inputs' weights and parameters plus the
    statistics it gathers; `passes` is how many statistics passes it still needs."""

    weights: np.ndarray  # (n,) float64
    model_params: list[dict[str, Any]]
    params: dict[str, Any]
    numel: int
    passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    coef: np.ndarray | None = None  # float32


class Method:
    name = ""
    base = "unused"  # "required" | "optional" | "unused"
    min_models, max_models = 1, None
    shared: dict[str, Any] = {}
    per_model: dict[str, Any] = {"weight": REQUIRED}
    scratch = 2
    """float32 temporaries per input element of a block, for the executor's memory plan."""
    weight_free_statistics = False
    """Whether the statistics passes ignore the weights (and per-model parameters), so a sweep can
    compute them once for all its trials (merge/in_memory.py)."""

    def validate(self, n_models: int, has_base: bool, params: dict[str, Any],
                 model_params: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Parameters with defaults filled in; a clear error for anything this method cannot use."""
        if self.base == "required" and not has_base:
            raise MergeMethodError(f"{self.name} needs a base_model")
        if self.base == "unused" and has_base:
            raise MergeMethodError(f"{self.name} takes no base_model (list it under models with a weight instead)")
        if n_models < self.min_models or (self.max_models is not None and n_models > self.max_models):
            want = self.min_models if self.max_models == self.min_models else f"at least {self.min_models}"
            raise MergeMethodError(f"{self.name} merges {want} model(s) besides the base, got {n_models}")
        unknown = sorted(set(params) - set(self.shared))
        if unknown:
            raise MergeMethodError(f"{self.name}: unknown parameter {unknown[0]!r}; known: {sorted(self.shared)}")
        shared = {}
        for key, default in self.shared.items():
            value = params.get(key, default)
            if value is REQUIRED:
                raise MergeMethodError(f"{self.name}: parameter {key!r} is required")
            if not isinstance(value, (int, float, bool)):
                raise MergeMethodError(f"{self.name}: parameter {key!r} must be a number, got {value!r} "
                                       "(per-layer gradients and filters are not supported)")
            shared[key] = value
        per_model = []
        for i, mp in enumerate(model_params):
            unknown = sorted(set(mp) - set(self.per_model))
            if unknown:
                raise MergeMethodError(f"{self.name}: model {i}: unknown parameter {unknown[0]!r}; "
                                       f"known: {sorted(self.per_model)}")
            filled = {}
            for key, default in self.per_model.items():
                value = mp.get(key, default)
                if value is REQUIRED:
                    raise MergeMethodError(f"{self.name}: model {i} needs parameter {key!r}")
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise MergeMethodError(f"{self.name}: model {i}: {key!r} must be a finite number, got {value!r}")
                filled[key] = float(value)
            per_model.append(filled)
        return shared, per_model

    def start(self, state: TensorState) -> None:
        """Set `state.passes` and anything the passes need."""

    def statistics(self, state: TensorState, pass_index: int, xs: np.ndarray,
                   base: np.ndarray | None) -> np.ndarray:
        """This block's share of pass `pass_index`'s statistics: an array that sums over blocks.
        Runs concurrently on several blocks: it may modify `xs` (scratch) but not `state`."""
        raise NotImplementedError

    def finish(self, state: TensorState, pass_index: int, total: np.ndarray) -> None:
        """Use the summed statistics of a pass (set `state.coef` or what the next pass needs)."""
        raise NotImplementedError

    def combine(self, state: TensorState, xs: np.ndarray, base: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """One output block (float32), preferably computed into `out` (float32 scratch of one row)
        and returned. `xs` is scratch too: it may be modified in place. Streaming calls this for
        every block of a model, so avoiding temporaries here avoids allocator churn."""
        raise NotImplementedError


def gram(xs: np.ndarray) -> np.ndarray:
    """xs @ xs.T in float64 from float32 dot products: one BLAS dot per pair is several times
    faster than a (few x huge) @ (huge x few) matrix product, which BLAS handles badly."""
    n = len(xs)
    g = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            g[i, j] = g[j, i] = np.dot(xs[i], xs[j])
    return g
