"""Spherical methods: Multi-SLERP and the Karcher mean over any number of models, SLERP between a
base and one model, NuSLERP between two models. All of them need only dot products of the
inputs, gathered in one statistics pass; the output is a linear combination of the inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from boom_ray.merge.methods.base import REQUIRED, Method, TensorState, gram, group_gram


@dataclass
class MultislerpState(TensorState):
    mix: np.ndarray | None = None
    """(n,) float64: the weights, normalised to sum 1 when `normalize_weights`."""


class Multislerp(Method[MultislerpState]):
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
    weight_free_statistics = True  # the Gram matrix of the inputs (minus the base)
    shared = {"normalize_weights": True, "eps": 1e-8}
    state_type = MultislerpState

    def start(self, state: MultislerpState) -> None:
        w = state.weights
        if state.params["normalize_weights"]:
            w = w / w.sum()
        state.mix = w
        n = len(w)
        state.passes = 1 if n > 1 else 0
        if n == 1:
            state.coef = np.ones(1, dtype=np.float32)

    def statistics(self, state, pass_index, xs, base, start=0):
        if base is not None:
            xs -= base
        return gram(xs)

    def finish(self, state: MultislerpState, pass_index: int, total: np.ndarray) -> None:
        gram, w, eps = total, state.mix, state.params["eps"]
        norms = np.sqrt(np.maximum(gram.diagonal(), 0))
        c = w / (norms + eps)
        mean_norm = math.sqrt(max(float(c @ gram @ c), 0.0))
        if mean_norm < eps:
            state.coef = w.astype(np.float32)
        else:
            state.coef = (c * (float((w * norms).sum()) / mean_norm)).astype(np.float32)

    def weighted_sum(self, state, has_base):
        return None if has_base else state.coef

    def gram_statistics(self, state, pass_index, has_base):
        return not has_base

    def combine(self, state, xs, base, out, start=0):
        if base is not None:
            xs -= base
        np.dot(state.coef, xs, out=out)
        if base is not None:
            out += base
        return out



class Slerp(Method[TensorState]):
    """Spherical interpolation between the base (t = 0) and one other model (t = 1) (mergekit
    `slerp`): with cos(theta) the cosine between the flattened tensors (norms below eps count as
    1, clamped to [-1, 1]), the result is sin((1-t) theta)/sin(theta) base + sin(t theta)/sin(theta) x,
    or the linear (1-t) base + t x when |cos(theta)| > 0.9995. One statistics pass gathers the
    two norms and the dot product. `t` may be a per-layer gradient, as in mergekit."""

    name = "slerp"
    base = "required"
    weight_free_statistics = True  # the two norms and the dot product
    min_models = max_models = 1
    shared = {"t": REQUIRED}
    per_model = {"weight": 1.0}
    DOT_THRESHOLD = 0.9995
    EPS = 1e-8

    def start(self, state):
        state.passes = 1

    def statistics(self, state, pass_index, xs, base, start=0):
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

    def combine(self, state, xs, base, out, start=0):
        np.multiply(base, state.coef[0], out=out)
        xs[0] *= state.coef[1]
        out += xs[0]
        return out


class Karcher(Method[TensorState]):
    """Karcher mean on the unit hypersphere (mergekit `karcher`): with norms n_i = |x_i| and
    units u_i = x_i / n_i (0 where n_i = 0), the models with n_i > `tol` get equal weights
    a_i = 1 / count (mergekit 0.1.5 ignores `weight`: accepted here, and ignored too); starting
    from m = normalised sum a_i u_i (the first valid unit if that is below `tol`), up to
    `max_iter` times: T = sum over i with theta_i = acos(clamp(m . u_i)) >= tol of
    a_i theta_i / sin(theta_i) (u_i - cos(theta_i) m); stop when |T| < tol, else
    m = cos|T| m + sin|T| T / |T|, renormalised. The result is m * sum_i n_i / N over all N
    models (all-zero if no model has n_i > tol; one model is returned as is). A base model is an
    ordinary input, as in mergekit.

    Every iterate is a combination of the inputs, so the iteration runs on coefficient vectors
    with the Gram matrix from one statistics pass (float64; mergekit iterates on whole float32
    tensors)."""

    name = "karcher"
    weight_free_statistics = True  # the Gram matrix of the inputs
    shared = {"max_iter": 10, "tol": 1e-5}
    per_model = {"weight": 1.0}

    def start(self, state):
        n = len(state.weights)
        state.passes = 1 if n > 1 else 0
        if n == 1:
            state.coef = np.ones(1, dtype=np.float32)

    def statistics(self, state, pass_index, xs, base, start=0):
        return gram(xs)

    def finish(self, state, pass_index, total):
        g, tol = total, float(state.params["tol"])
        n = len(g)
        norms = np.sqrt(np.maximum(g.diagonal(), 0))
        inv = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0.0)
        units = np.diag(inv)  # row i: coefficients of u_i over the inputs
        valid = [i for i in range(n) if norms[i] > tol]
        if not valid:
            state.coef = np.zeros(n, dtype=np.float32)
            return
        a = 1 / len(valid)

        def norm(c):
            return math.sqrt(max(float(c @ g @ c), 0.0))

        mean = a * units[valid].sum(0)
        mean_norm = norm(mean)
        mean = units[valid[0]].copy() if mean_norm < tol else mean / mean_norm
        for _ in range(int(state.params["max_iter"])):
            tangent = np.zeros(n)
            for i in valid:
                dot = min(1.0, max(-1.0, float(mean @ g @ units[i])))
                theta = math.acos(dot)
                if theta < tol:
                    continue
                tangent += a * (theta / math.sin(theta)) * (units[i] - dot * mean)
            tn = norm(tangent)
            if tn < tol:
                break
            mean = math.cos(tn) * mean + math.sin(tn) * (tangent / tn)
            un = norm(mean)
            if un > tol:
                mean = mean / un
        state.coef = (mean * float(norms.sum() / n)).astype(np.float32)

    def combine(self, state, xs, base, out, start=0):
        return np.dot(state.coef, xs, out=out)


@dataclass
class NuslerpState(TensorState):
    t: float = 0.5
    """Where between the two models: w_1 / (w_0 + w_1)."""
    groups: int = 1
    """Vectors interpolated on their own (1: the whole tensor)."""


class Nuslerp(Method[NuslerpState]):
    """NuSLERP (mergekit `nuslerp`): spherical interpolation between two models (or, with a base,
    their task vectors, the base added back) at t = w_1 / (w_0 + w_1) (0.5 if |w_0 + w_1| <
    1e-6). With cos = clamp(v0 . v1 / (max(|v0|, 1e-7) max(|v1|, 1e-7)), -1, 1) and theta =
    acos(cos), the result is (sin((1-t) theta) v0 + sin(t theta) v1) / sin(theta), or the linear
    (1-t) v0 + t v1 where 1 - cos^2 <= 1e-16. `nuslerp_flatten` (default on) treats the tensor
    as one vector; off, each vector along the last dimension is interpolated on its own, or along
    the first with `nuslerp_row_wise`. One statistics pass gathers the (per-vector) dot products
    in float64 (mergekit: float32)."""

    name = "nuslerp"
    base = "optional"
    weight_free_statistics = True  # the (per-vector) dot products of the two inputs
    min_models = max_models = 2
    shared = {"nuslerp_row_wise": False, "nuslerp_flatten": True}
    state_type = NuslerpState

    def start(self, state: NuslerpState) -> None:
        w0, w1 = state.weights
        state.t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
        if state.params["nuslerp_flatten"]:
            state.groups = 1
        elif state.params["nuslerp_row_wise"]:
            state.groups = state.numel // state.shape[0] if state.shape else 1
        else:
            state.groups = state.numel // state.shape[-1] if state.shape else 1
        state.passes = 1

    def _group(self, state: NuslerpState, start: int, m: int) -> np.ndarray:
        idx = np.arange(start, start + m)
        if state.groups == 1:
            return np.zeros(m, dtype=np.int64)
        if state.params["nuslerp_row_wise"]:
            return idx % state.groups
        return idx // (state.numel // state.groups)

    def statistics(self, state, pass_index, xs, base, start=0):
        if base is not None:
            xs -= base
        if state.groups == 1:
            return gram(xs)[None]
        return group_gram(xs, self._group(state, start, xs.shape[1]), state.groups)

    def finish(self, state: NuslerpState, pass_index: int, total: np.ndarray) -> None:
        t = state.t
        n0 = np.maximum(np.sqrt(np.maximum(total[:, 0, 0], 0)), 1e-7)
        n1 = np.maximum(np.sqrt(np.maximum(total[:, 1, 1], 0)), 1e-7)
        cos = np.clip(total[:, 0, 1] / (n0 * n1), -1, 1)
        colinear = (1 - cos * cos) <= 1e-16
        theta = np.arccos(np.where(colinear, 0, cos))
        sin = np.where(colinear, 1, np.sin(theta))
        c0 = np.where(colinear, 1 - t, np.sin((1 - t) * theta) / sin)
        c1 = np.where(colinear, t, np.sin(t * theta) / sin)
        state.coef = np.stack([c0, c1]).astype(np.float32)  # (2, groups)

    def combine(self, state, xs, base, out, start=0):
        if base is not None:
            xs -= base
        if state.groups == 1:
            np.dot(state.coef[:, 0], xs, out=out)
        else:
            g = self._group(state, start, xs.shape[1])
            np.multiply(xs[0], state.coef[0][g], out=out)
            out += xs[1] * state.coef[1][g]
        if base is not None:
            out += base
        return out
