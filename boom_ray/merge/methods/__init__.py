"""Merge methods: pure per-tensor maths, registered by name in :data:`METHODS`.

Every method sees a tensor as a stack of flat float32 rows `xs` (one per non-base model) plus an
optional flat `base`, and is written as: `start` (per-tensor state from weights and parameters),
zero or more statistics passes (`statistics` of each block, summed over the tensor, then
`finish`), and `combine` (one output block from the same input block). Statistics are sums, so
blocks can be computed on any thread in any order and added up. merge/driver.py runs these
steps for every merge: a tensor that fits in memory runs every pass over its blocks in memory; a
bigger one is re-read from disk once per pass. Each block comes with the index of its first
element (`start`: random masks and per-row statistics depend on where an element is), and a
method may ask for blocks of whole rows (`alignment`).

Parameters are mergekit settings (numbers, per-layer gradients, `filter:` lists; see `params`):
`Method.validate` checks a request's into `Settings`, `Method.resolve` turns those into one
tensor's numbers (`TensorParams`, the weights among them), and `Method.new_state` starts the
method's typed `TensorState` from them. The block results never depend on how a tensor was cut,
so chunked and whole merges agree (up to float summation order in the statistics, which are
summed in float64).

Semantics follow mergekit 0.1.5 (`mergekit/merge_methods/*.py`); each class's docstring states
the formula and where it knowingly differs. The maths is numpy: a merge is memory-bound
conversions and a few BLAS-1/2 calls per block, and without torch's 1.4 to 2 s import `boom
merge` is ready to work within half a second or so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from boom_ray.merge.blocks import Workers
from boom_ray.merge.driver import ArrayOutput, Arrays, merge_tensor
from boom_ray.merge.methods.adaptive import ModelStock, Sce
from boom_ray.merge.methods.base import REQUIRED, MergeMethodError, Method, Settings, TensorParams, TensorState, gram
from boom_ray.merge.methods.linear import Linear, TaskArithmetic
from boom_ray.merge.methods.spherical import Karcher, Multislerp, Nuslerp, Slerp
from boom_ray.merge.methods.task_vectors import (Breadcrumbs, BreadcrumbsTies, DareLinear, DareTies, Della,
                                                 DellaLinear, Ties)

__all__ = ["METHODS", "REQUIRED", "MergeMethodError", "Method", "Settings", "TensorParams", "TensorState",
           "get_method", "gram", "known_method", "merge_tensors"]

METHODS: dict[str, Method] = {
    "multislerp": Multislerp(),
    "linear": Linear(),
    "slerp": Slerp(),
    "task_arithmetic": TaskArithmetic(),
    "ties": Ties(),
    "dare_ties": DareTies(),
    "dare_linear": DareLinear(),
    "breadcrumbs": Breadcrumbs(),
    "breadcrumbs_ties": BreadcrumbsTies(),
    "della": Della(),
    "della_linear": DellaLinear(),
    "karcher": Karcher(),
    "nuslerp": Nuslerp(),
    "model_stock": ModelStock(),
    "sce": Sce(),
}


def known_method(name: str) -> str:
    """`name` if a method of that name is registered, else ValueError. (The run config's type for
    method names checks with this, importing this package only when a config is validated.)"""
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; known: {sorted(METHODS)}")
    return name


def get_method(name: str) -> Method:
    try:
        return METHODS[known_method(name)]
    except ValueError as exc:
        raise MergeMethodError(str(exc)) from None


def _float32(t: Any) -> np.ndarray:
    """A float32 numpy copy of an array or a (CPU) torch tensor of any float dtype."""
    if hasattr(t, "detach"):  # torch, without importing it
        t = t.detach().float().cpu().numpy()
    return np.array(t, dtype=np.float32)


def merge_tensors(name: str, tensors: list[Any], weights: list[float] | None = None,
                  base: Any | None = None, parameters: dict[str, Any] | None = None,
                  model_parameters: list[dict[str, Any]] | None = None, *, tensor_name: str = "",
                  t: float = 0.0) -> np.ndarray:
    """Merge whole in-memory arrays or torch tensors (a float32 numpy array of the first one's
    shape): the reference path that tests use, the driver's steps with the tensor as one block
    (the streaming merge runs the same steps in many). `tensor_name` and the layer position `t`
    resolve per-layer gradients and filters."""
    method = get_method(name)
    model_parameters = [dict(mp) for mp in (model_parameters or [{} for _ in tensors])]
    if weights is not None:
        for mp, w in zip(model_parameters, weights):
            mp["weight"] = w
    settings = method.validate(len(tensors), base is not None, parameters or {}, model_parameters)
    arrays = [_float32(x) for x in tensors]
    rows = [a.reshape(-1) for a in arrays] + ([_float32(base).reshape(-1)] if base is not None else [])
    numel = rows[0].size
    state = method.new_state(method.resolve(settings, tensor_name, t), numel, arrays[0].shape, tensor_name)
    out = np.empty(numel, dtype=np.float32)
    merge_tensor(method, state, Arrays(rows, "F32", len(arrays)), ArrayOutput(out, "F32"),
                 Workers(None, 1, len(rows)), block=max(1, numel))
    return out.reshape(arrays[0].shape)
