"""Merge methods: pure per-tensor maths, registered by name in :data:`METHODS`.

Every method sees a tensor as a stack of flat float32 rows `xs` (one per non-base model) plus an
optional flat `base`, and is written as: `start` (per-tensor state from weights and parameters),
zero or more statistics passes (`statistics` of each block, summed over the tensor, then
`finish`), and `combine` (one output block from the same input block). Statistics are sums, so
blocks can be computed on any thread in any order and added up. A tensor that fits in memory
runs every pass over its blocks in memory; a bigger one is re-read from disk once per pass. The
block results never depend on how a tensor was cut, so chunked and whole merges agree (up to
float summation order in the statistics, which are summed in float64).

Semantics follow mergekit 0.1.5 (`mergekit/merge_methods/*.py`); each class's docstring states
the formula and where it knowingly differs. The maths is numpy: a merge is memory-bound
conversions and a few BLAS-1/2 calls per block, and without torch's 1.4 to 2 s import `boom
merge` is ready to work within half a second or so.
"""

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


def _gram(xs: np.ndarray) -> np.ndarray:
    """xs @ xs.T in float64 from float32 dot products: one BLAS dot per pair is several times
    faster than a (few x huge) @ (huge x few) matrix product, which BLAS handles badly."""
    n = len(xs)
    g = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            g[i, j] = g[j, i] = np.dot(xs[i], xs[j])
    return g


class Multislerp(Method):
    """Multi-SLERP (mergekit `multislerp`): barycentric interpolation on the hypersphere.

    mergekit projects unit tensors u_i = x_i / (|x_i| + eps) (x_i minus the base, if any) to the
    tangent space at their normalised weighted mean m and maps back with the exponential map. The
    tangent part vanishes analytically, so the result is m * sum_i w_i |x_i|, i.e.
    (sum c_i x_i) / sqrt(c^T G c) * sum_i w_i |x_i| with c_i = w_i / (|x_i| + eps) and G the Gram
    matrix of the x_i. One statistics pass sums G over blocks; `combine` is one matrix-vector product.

    Differences from mergekit: where the weighted mean of the unit tensors is zero (|m| < eps:
    all-zero tensors, or antipodal inputs that cancel) mergekit falls back to linear
    interpolation for two models and raises for more; here the weighted linear sum is used for
    any number of models. With one model the result is that model (as in mergekit).
    """

    name = "multislerp"
    base = "optional"
    shared = {"normalize_weights": True, "eps": 1e-8}

    def start(self, state: TensorState) -> None:
        w = state.weights
        if state.params["normalize_weights"]:
            w = w / w.sum()
        state.extra["w"] = w
        n = len(w)
        state.passes = 1 if n > 1 else 0
        if n == 1:
            state.coef = np.ones(1, dtype=np.float32)

    def statistics(self, state, pass_index, xs, base):
        if base is not None:
            xs -= base
        return _gram(xs)

    def finish(self, state, pass_index, total):
        gram, w, eps = total, state.extra["w"], state.params["eps"]
        norms = np.sqrt(np.maximum(gram.diagonal(), 0))
        c = w / (norms + eps)
        mean_norm = math.sqrt(max(float(c @ gram @ c), 0.0))
        if mean_norm < eps:
            state.coef = w.astype(np.float32)
        else:
            state.coef = (c * (float((w * norms).sum()) / mean_norm)).astype(np.float32)

    def combine(self, state, xs, base, out):
        if base is not None:
            xs -= base
        np.dot(state.coef, xs, out=out)
        if base is not None:
            out += base
        return out


class Linear(Method):
    """Weighted average (mergekit `linear`): sum_i w_i x_i, divided by sum_i w_i when `normalize`
    (the default). Elementwise: no statistics pass."""

    name = "linear"
    shared = {"normalize": True}

    def start(self, state):
        w = state.weights
        state.coef = (w / w.sum() if state.params["normalize"] else w).astype(np.float32)

    def combine(self, state, xs, base, out):
        return np.dot(state.coef, xs, out=out)


class Slerp(Method):
    """Spherical interpolation between the base (t = 0) and one other model (t = 1) (mergekit
    `slerp`): with cos(theta) the cosine between the flattened tensors (norms below eps count as
    1, clamped to [-1, 1]), the result is sin((1-t) theta)/sin(theta) base + sin(t theta)/sin(theta) x,
    or the linear (1-t) base + t x when |cos(theta)| > 0.9995. One statistics pass gathers the
    two norms and the dot product. `t` is one number: mergekit's per-layer gradients are not
    supported."""

    name = "slerp"
    base = "required"
    min_models = max_models = 1
    shared = {"t": REQUIRED}
    per_model = {"weight": 1.0}
    DOT_THRESHOLD = 0.9995
    EPS = 1e-8

    def start(self, state):
        state.passes = 1

    def statistics(self, state, pass_index, xs, base):
        x = xs[0]
        return np.array([np.dot(base, base), np.dot(x, x), np.dot(base, x)], dtype=np.float64)

    def finish(self, state, pass_index, total):
        bb, xx, bx = (float(v) for v in total)
        na = math.sqrt(max(bb, 0.0))
        nb = math.sqrt(max(xx, 0.0))
        na = na if na > self.EPS else 1.0
        nb = nb if nb > self.EPS else 1.0
        dot = min(1.0, max(-1.0, bx / (na * nb)))
        t = float(state.params["t"])
        if abs(dot) > self.DOT_THRESHOLD:
            ca, cb = 1 - t, t
        else:
            theta = math.acos(dot)
            ca, cb = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
        state.coef = np.array([ca, cb], dtype=np.float32)

    def combine(self, state, xs, base, out):
        np.multiply(base, state.coef[0], out=out)
        xs[0] *= state.coef[1]
        out += xs[0]
        return out


class TaskArithmetic(Method):
    """Task arithmetic (mergekit `task_arithmetic`): base + lambda * sum_i w_i (x_i - base),
    divided by sum_i w_i when `normalize` (default off; a divisor below 1e-8 counts as 1).
    Elementwise: no statistics pass. `density` is accepted and ignored, as in mergekit."""

    name = "task_arithmetic"
    base = "required"
    shared = {"normalize": False, "lambda": 1.0, "int8_mask": False, "rescale": False}
    per_model = {"weight": REQUIRED, "density": 1.0}

    def start(self, state):
        w = state.weights
        scale = float(state.params["lambda"])
        if state.params["normalize"]:
            div = float(w.sum())
            scale /= div if abs(div) >= 1e-8 else 1.0
        state.coef = (w * scale).astype(np.float32)

    def combine(self, state, xs, base, out):
        xs -= base
        np.dot(state.coef, xs, out=out)
        out += base
        return out


class Ties(Method):
    """TIES (mergekit `ties`): each task vector d_i = x_i - base keeps its top `density` fraction
    by magnitude (k_i = max(1, int(density * numel)) entries; density <= 0 keeps none), is
    weighted, and a weighted entry survives only where its sign matches the majority sign of the
    weighted sum; the survivors are summed, divided by the sum of the surviving weights when
    `normalize` (default on), scaled by `lambda` and added to the base.

    The k-th largest magnitude is found exactly by a two-pass radix select over the float32 bit
    patterns (histograms of the high, then the low 16 bits), so a tensor of any size is
    sparsified in bounded memory. Entries whose magnitude equals the threshold are all kept,
    where mergekit keeps an arbitrary k of them (this only matters for repeated magnitudes).
    `rescale: true` (mergekit's L1 rescaling of the kept entries) is not supported.
    """

    name = "ties"
    base = "required"
    shared = {"normalize": True, "lambda": 1.0, "int8_mask": False, "rescale": False}
    per_model = {"weight": REQUIRED, "density": 1.0}
    scratch = 6
    BINS = 1 << 16

    def validate(self, n_models, has_base, params, model_params):
        shared, per_model = super().validate(n_models, has_base, params, model_params)
        if shared["rescale"]:
            raise MergeMethodError("ties: rescale: true is not supported")
        return shared, per_model

    def start(self, state):
        dens = [mp["density"] for mp in state.model_params]
        ks = [0 if d <= 0 else (state.numel if d >= 1 else max(1, int(d * state.numel))) for d in dens]
        state.extra["k"] = ks
        state.extra["select"] = [i for i, k in enumerate(ks) if 0 < k < state.numel]
        state.extra["threshold"] = {}
        state.passes = 2 if state.extra["select"] else 0
        state.coef = state.weights.astype(np.float32)

    def _bits(self, state, xs, base):
        sel = state.extra["select"]
        return np.abs(xs[sel] - base).view(np.int32), sel

    def statistics(self, state, pass_index, xs, base):
        bits, sel = self._bits(state, xs, base)
        offsets = np.arange(len(sel), dtype=np.int64).reshape(-1, 1) * self.BINS
        if pass_index == 0:
            keys = (bits >> 16).astype(np.int64) + offsets
        else:
            hi = np.array(state.extra["hi"], dtype=np.int32).reshape(-1, 1)
            keys = ((bits & 0xFFFF).astype(np.int64) + offsets)[(bits >> 16) == hi]
        return np.bincount(keys.reshape(-1), minlength=len(sel) * self.BINS).reshape(len(sel), self.BINS)

    def finish(self, state, pass_index, total):
        counts = total
        # at_least[i, b] = number of entries of row i whose key is >= b
        at_least = counts[:, ::-1].cumsum(1)[:, ::-1]
        if pass_index == 0:
            need = np.array([state.extra["k"][i] for i in state.extra["select"]]).reshape(-1, 1)
            hi = (at_least >= need).sum(1) - 1  # largest bin whose suffix count reaches k
            padded = np.concatenate([at_least, np.zeros((len(hi), 1), dtype=at_least.dtype)], 1)
            above = np.take_along_axis(padded, (hi + 1).reshape(-1, 1), 1)
            state.extra["hi"] = hi.tolist()
            state.extra["need"] = (need - above).reshape(-1).tolist()
        else:
            need = np.array(state.extra["need"]).reshape(-1, 1)
            lo = (at_least >= need).sum(1) - 1
            for row, i in enumerate(state.extra["select"]):
                bits = np.array([(state.extra["hi"][row] << 16) | int(lo[row])], dtype=np.int32)
                state.extra["threshold"][i] = float(bits.view(np.float32)[0])

    def combine(self, state, xs, base, out):
        xs -= base
        deltas = xs
        for i, k in enumerate(state.extra["k"]):
            if k == 0:
                deltas[i] = 0
            elif i in state.extra["threshold"]:
                deltas[i] *= np.abs(deltas[i]) >= state.extra["threshold"][i]
        w = state.coef.reshape(-1, 1)
        deltas *= w
        majority = np.where(deltas.sum(0) >= 0, np.float32(1), np.float32(-1))
        mask = (np.sign(deltas) == majority).astype(np.float32)
        mixed = (deltas * mask).sum(0)
        if state.params["normalize"]:
            divisor = (w * mask).sum(0)
            divisor[divisor == 0] = 1
            mixed /= divisor
        if state.params["lambda"] != 1:
            mixed *= state.params["lambda"]
        return base + mixed


METHODS: dict[str, Method] = {
    "multislerp": Multislerp(),
    "linear": Linear(),
    "slerp": Slerp(),
    "task_arithmetic": TaskArithmetic(),
    "ties": Ties(),
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise MergeMethodError(f"unknown merge method {name!r}; known: {sorted(METHODS)}") from None


def new_state(method: Method, weights: list[float], params: dict[str, Any],
              model_params: list[dict[str, Any]], numel: int) -> TensorState:
    state = TensorState(np.array(weights, dtype=np.float64), model_params, params, numel)
    method.start(state)
    return state


def _float32(t: Any) -> np.ndarray:
    """A float32 numpy copy of an array or a (CPU) torch tensor of any float dtype."""
    if hasattr(t, "detach"):  # torch, without importing it
        t = t.detach().float().cpu().numpy()
    return np.array(t, dtype=np.float32)


def merge_tensors(name: str, tensors: list[Any], weights: list[float] | None = None,
                  base: Any | None = None, parameters: dict[str, Any] | None = None,
                  model_parameters: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Merge whole in-memory arrays or torch tensors (a float32 numpy array of the first one's
    shape): the reference path that tests use; the streaming executor runs the same steps in
    blocks."""
    method = get_method(name)
    model_parameters = [dict(mp) for mp in (model_parameters or [{} for _ in tensors])]
    if weights is not None:
        for mp, w in zip(model_parameters, weights):
            mp["weight"] = w
    params, model_params = method.validate(len(tensors), base is not None, parameters or {}, model_parameters)
    arrays = [_float32(t) for t in tensors]
    xs = np.stack([a.reshape(-1) for a in arrays])
    b = _float32(base).reshape(-1) if base is not None else None
    state = new_state(method, [mp.get("weight", 1.0) for mp in model_params], params, model_params, xs.shape[1])
    for p in range(state.passes):
        method.finish(state, p, method.statistics(state, p, xs.copy(), b))
    return method.combine(state, xs, b, np.empty(xs.shape[1], dtype=np.float32)).reshape(arrays[0].shape)
