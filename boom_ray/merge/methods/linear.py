"""Elementwise weighted sums: linear averaging and task arithmetic (no statistics pass)."""

from __future__ import annotations

import numpy as np

from boom_ray.merge.methods.base import REQUIRED, Method, TensorState


class Linear(Method[TensorState]):
    """Weighted average (mergekit `linear`): sum_i w_i x_i, divided by sum_i w_i when `normalize`
    (the default). Elementwise: no statistics pass."""

    name = "linear"
    shared = {"normalize": True}

    def start(self, state):
        w = state.weights
        state.coef = (w / w.sum() if state.params["normalize"] else w).astype(np.float32)

    def weighted_sum(self, state, has_base):
        return state.coef

    def combine(self, state, xs, base, out, start=0):
        return np.dot(state.coef, xs, out=out)



class TaskArithmetic(Method[TensorState]):
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

    def combine(self, state, xs, base, out, start=0):
        xs -= base
        np.dot(state.coef, xs, out=out)
        out += base
        return out
