"""Spherical methods: Multi-SLERP over any number of models, SLERP between a base and one model."""

from __future__ import annotations

import math

import numpy as np

from boom_ray.merge.methods.base import REQUIRED, Method, TensorState, gram


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

    def statistics(self, state, pass_index, xs, base, start=0):
        if base is not None:
            xs -= base
        return gram(xs)

    def finish(self, state, pass_index, total):
        gram, w, eps = total, state.extra["w"], state.params["eps"]
        norms = np.sqrt(np.maximum(gram.diagonal(), 0))
        c = w / (norms + eps)
        mean_norm = math.sqrt(max(float(c @ gram @ c), 0.0))
        if mean_norm < eps:
            state.coef = w.astype(np.float32)
        else:
            state.coef = (c * (float((w * norms).sum()) / mean_norm)).astype(np.float32)

    def combine(self, state, xs, base, out, start=0):
        if base is not None:
            xs -= base
        np.dot(state.coef, xs, out=out)
        if base is not None:
            out += base
        return out



class Slerp(Method):
    """Spherical interpolation between the base (t = 0) and one other model (t = 1) (mergekit
    `slerp`): with cos(theta) the cosine between the flattened tensors (norms below eps count as
    1, clamped to [-1, 1]), the result is sin((1-t) theta)/sin(theta) base + sin(t theta)/sin(theta) x,
    or the linear (1-t) base + t x when |cos(theta)| > 0.9995. One statistics pass gathers the
    two norms and the dot product. `t` may be a per-layer gradient, as in mergekit."""

    name = "slerp"
    base = "required"
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
