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
the formula and where it knowingly differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from boom_ray.errors import BoomError

REQUIRED = object()


class MergeMethodError(BoomError):
    """Parameters a merge method cannot use, or a tensor it cannot merge."""


@dataclass
class TensorState:
    """What a method knows about the tensor being merged: inputs' weights and parameters plus the
    statistics it gathers; `passes` is how many statistics passes it still needs."""

    weights: torch.Tensor  # (n,) float64
    model_params: list[dict[str, Any]]
    params: dict[str, Any]
    numel: int
    passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    coef: torch.Tensor | None = None


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

    def statistics(self, state: TensorState, pass_index: int, xs: torch.Tensor,
                   base: torch.Tensor | None) -> torch.Tensor:
        """This block's share of pass `pass_index`'s statistics: a tensor that sums over blocks.
        Runs concurrently on several blocks: it may modify `xs` (scratch) but not `state`."""
        raise NotImplementedError

    def finish(self, state: TensorState, pass_index: int, total: torch.Tensor) -> None:
        """Use the summed statistics of a pass (set `state.coef` or what the next pass needs)."""
        raise NotImplementedError

    def combine(self, state: TensorState, xs: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """One output block (float32). `xs` is scratch: it may be modified in place."""
        raise NotImplementedError


def _gram(xs: torch.Tensor) -> torch.Tensor:
    return (xs @ xs.T).double()


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
            state.coef = torch.ones(1)

    def statistics(self, state, pass_index, xs, base):
        if base is not None:
            xs.sub_(base)
        return _gram(xs)

    def finish(self, state, pass_index, total):
        gram, w, eps = total, state.extra["w"], state.params["eps"]
        norms = gram.diagonal().clamp_min(0).sqrt()
        c = w / (norms + eps)
        mean_norm = float((c @ gram @ c).clamp_min(0).sqrt())
        if mean_norm < eps:
            state.coef = w.float()
        else:
            state.coef = (c * (float((w * norms).sum()) / mean_norm)).float()

    def combine(self, state, xs, base):
        if base is not None:
            xs.sub_(base)
        out = state.coef @ xs
        return out + base if base is not None else out


class Linear(Method):
    """Weighted average (mergekit `linear`): sum_i w_i x_i, divided by sum_i w_i when `normalize`
    (the default). Elementwise: no statistics pass."""

    name = "linear"
    shared = {"normalize": True}

    def start(self, state):
        w = state.weights
        state.coef = (w / w.sum() if state.params["normalize"] else w).float()

    def combine(self, state, xs, base):
        return state.coef @ xs


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
        return torch.stack([torch.dot(base, base), torch.dot(x, x), torch.dot(base, x)]).double()

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
        state.coef = torch.tensor([ca, cb], dtype=torch.float32)

    def combine(self, state, xs, base):
        return state.coef[0] * base + state.coef[1] * xs[0]


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
        state.coef = (w * scale).float()

    def combine(self, state, xs, base):
        xs.sub_(base)
        return base + state.coef @ xs


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
        state.coef = state.weights.float()

    def _bits(self, state, xs, base):
        sel = state.extra["select"]
        return (xs[sel] - base).abs_().view(torch.int32), sel

    def statistics(self, state, pass_index, xs, base):
        bits, sel = self._bits(state, xs, base)
        offsets = torch.arange(len(sel), dtype=torch.int64).view(-1, 1) * self.BINS
        if pass_index == 0:
            keys = (bits >> 16).long() + offsets
        else:
            hi = torch.tensor(state.extra["hi"], dtype=torch.int32).view(-1, 1)
            keys = ((bits & 0xFFFF).long() + offsets)[(bits >> 16) == hi]
        return torch.bincount(keys.reshape(-1), minlength=len(sel) * self.BINS).view(len(sel), self.BINS)

    def finish(self, state, pass_index, total):
        counts = total
        # at_least[i, b] = number of entries of row i whose key is >= b
        at_least = counts.flip(1).cumsum(1).flip(1)
        if pass_index == 0:
            need = torch.tensor([state.extra["k"][i] for i in state.extra["select"]]).view(-1, 1)
            hi = (at_least >= need).sum(1) - 1  # largest bin whose suffix count reaches k
            above = torch.cat([at_least, torch.zeros(len(hi), 1, dtype=at_least.dtype)], 1).gather(1, (hi + 1).view(-1, 1))
            state.extra["hi"] = hi.tolist()
            state.extra["need"] = (need - above).view(-1).tolist()
        else:
            need = torch.tensor(state.extra["need"]).view(-1, 1)
            lo = (at_least >= need).sum(1) - 1
            for row, i in enumerate(state.extra["select"]):
                bits = torch.tensor([(state.extra["hi"][row] << 16) | int(lo[row])], dtype=torch.int32)
                state.extra["threshold"][i] = float(bits.view(torch.float32))

    def combine(self, state, xs, base):
        deltas = xs.sub_(base)
        for i, k in enumerate(state.extra["k"]):
            if k == 0:
                deltas[i].zero_()
            elif i in state.extra["threshold"]:
                deltas[i].mul_(deltas[i].abs() >= state.extra["threshold"][i])
        w = state.coef.view(-1, 1)
        deltas.mul_(w)
        majority = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        mask = (deltas.sign() == majority).float()
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
    state = TensorState(torch.tensor(weights, dtype=torch.float64), model_params, params, numel)
    method.start(state)
    return state


def merge_tensors(name: str, tensors: list[torch.Tensor], weights: list[float] | None = None,
                  base: torch.Tensor | None = None, parameters: dict[str, Any] | None = None,
                  model_parameters: list[dict[str, Any]] | None = None) -> torch.Tensor:
    """Merge whole in-memory tensors (float32 result of the first tensor's shape): the reference
    path that tests and small sweeps use; the streaming executor runs the same steps in blocks."""
    method = get_method(name)
    model_parameters = [dict(mp) for mp in (model_parameters or [{} for _ in tensors])]
    if weights is not None:
        for mp, w in zip(model_parameters, weights):
            mp["weight"] = w
    params, model_params = method.validate(len(tensors), base is not None, parameters or {}, model_parameters)
    xs = torch.stack([t.reshape(-1).float() for t in tensors])
    b = base.reshape(-1).float() if base is not None else None
    state = new_state(method, [mp.get("weight", 1.0) for mp in model_params], params, model_params, xs.shape[1])
    for p in range(state.passes):
        method.finish(state, p, method.statistics(state, p, xs.clone(), b))
    return method.combine(state, xs, b).reshape(tensors[0].shape)
