"""Methods whose mixing weights come from the task vectors themselves: Model Stock (from the
angles between them) and SCE (select by variance, weight by energy, erase by sign)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from boom_ray.merge.methods.base import Method, TensorState, gram, group_gram
from boom_ray.merge.methods.select import RadixSelect


@dataclass
class ModelStockState(TensorState):
    rows: int = 1
    """Vectors with their own t (`filter_wise`: the rows along the last dimension), else 1."""


class ModelStock(Method[ModelStockState]):
    """Model Stock (mergekit `model_stock`): with task vectors d_i = x_i - base of N >= 2 models,
    cos = the mean over pairs i < j of clamp(d_i . d_j / max(|d_i| |d_j|, 1e-6), -1, 1),
    t = N cos / (1 + (N - 1) cos) (0 where |1 + (N - 1) cos| < 1e-6), and the result is
    t * mean_i x_i + (1 - t) * base. With `filter_wise`, cos and t are computed for each vector
    along the last dimension (each row of a 2-D tensor) instead of the whole tensor. One
    statistics pass gathers the (per-row) Gram matrix of the d_i in float64 (mergekit: float32).
    `weight` is accepted and ignored, as in mergekit."""

    name = "model_stock"
    base = "required"
    weight_free_statistics = True  # the (per-row) Gram matrix of the task vectors
    min_models = 2
    shared = {"filter_wise": False}
    per_model = {"weight": 1.0}
    state_type = ModelStockState

    def start(self, state: ModelStockState) -> None:
        last = state.shape[-1] if state.shape else state.numel
        state.rows = state.numel // max(1, last) if state.params["filter_wise"] else 1
        state.passes = 1

    def _rows(self, state: ModelStockState, start: int, m: int) -> np.ndarray:
        return (np.arange(start, start + m) // (state.numel // state.rows)).astype(np.int64)

    def statistics(self, state, pass_index, xs, base, start=0):
        xs -= base
        if state.rows == 1:
            return gram(xs)[None]
        return group_gram(xs, self._rows(state, start, xs.shape[1]), state.rows)

    def finish(self, state, pass_index, total):
        n = total.shape[1]
        norms = np.sqrt(np.maximum(np.diagonal(total, axis1=1, axis2=2), 0))
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        cos = np.mean([np.clip(total[:, i, j] / np.maximum(norms[:, i] * norms[:, j], 1e-6), -1, 1)
                       for i, j in pairs], axis=0)
        denom = 1 + (n - 1) * cos
        singular = np.abs(denom) < 1e-6
        t = np.where(singular, 0.0, n * cos / np.where(singular, 1, denom))
        state.coef = t.astype(np.float32)  # per row

    def combine(self, state, xs, base, out, start=0):
        n = len(xs)
        t = state.coef[0] if state.rows == 1 else state.coef[self._rows(state, start, xs.shape[1])]
        np.multiply(xs.sum(0), t / np.float32(n), out=out)
        out += (1 - t) * base
        return out


@dataclass
class SceState(TensorState):
    kinds: list[str] = field(default_factory=list)
    """Each statistics pass: "hi" / "lo" (radix select of the variances), "energy", or "skip"."""
    none: bool = False
    """No entry is kept (select_topk <= 0, or k = 0)."""
    threshold: float | None = None
    """The k-th largest variance, once selected (None: keep every entry)."""
    select: RadixSelect = field(default_factory=lambda: RadixSelect([1]))


class Sce(Method[SceState]):
    """SCE (mergekit `sce`): task vectors d_i = x_i - base; with `select_topk` < 1 only the
    entries with the top k = int(select_topk * (number of entries of nonzero variance))
    variances across the models (population variance) are kept in every d_i (none if k = 0 or
    select_topk <= 0); each model's weight is the mean of its kept d_i^2, normalised to sum 1
    (1/N each if the sum is below 1e-6); an entry of d_i counts only where its sign equals the sign
    of sum_i d_i (0 counts as +). The result is base + sum_i w_i d_i / max(sum of the counted w_i,
    1e-6). `weight` is accepted and ignored, as in mergekit; `int8_mask` changes nothing.

    Streaming: the k-th largest variance by the exact radix select (two passes; the first also
    counts the nonzero variances), then one pass for the weights. Variances equal to the
    threshold are all kept, where mergekit keeps an arbitrary subset."""

    name = "sce"
    base = "required"
    shared = {"int8_mask": False, "select_topk": 1.0}
    per_model = {"weight": 1.0}
    scratch = 6
    state_type = SceState

    def start(self, state: SceState) -> None:
        topk = state.params["select_topk"]
        state.kinds = (["hi", "lo"] if 0 < topk < 1 else []) + ["energy"]
        state.none = topk <= 0
        state.passes = len(state.kinds)

    def _select(self, state: SceState, d: np.ndarray) -> None:
        """Zero the entries of d (rows) outside the top-k variance (in place)."""
        if state.none:
            d[:] = 0
        elif state.threshold is not None:
            d *= d.var(0) >= state.threshold

    def statistics(self, state, pass_index, xs, base, start=0):
        kind = state.kinds[pass_index]
        if kind == "skip":
            return np.zeros(1)
        xs -= base
        if kind == "energy":
            self._select(state, xs)
            return np.einsum("ij,ij->i", xs, xs, dtype=np.float64)
        var = xs.var(0)[None]
        hist = state.select.histogram(0 if kind == "hi" else 1, var)
        if kind == "hi":
            return np.concatenate([hist.reshape(-1), [np.count_nonzero(var)]])
        return hist

    def finish(self, state: SceState, pass_index: int, total: np.ndarray) -> None:
        kind = state.kinds[pass_index]
        select = state.select
        if kind == "hi":
            k = int(int(total[-1]) * state.params["select_topk"])
            if k == 0:
                state.none = True
                state.kinds[1] = "skip"
                return
            select.ks = [k]
            select.finish(0, total[:-1].reshape(1, -1))
        elif kind == "lo":
            select.finish(1, total)
            state.threshold = select.values[0]
        elif kind == "energy":
            energy = total / state.numel
            s = float(energy.sum())
            w = np.full(len(energy), 1 / len(energy)) if abs(s) < 1e-6 else energy / s
            state.coef = w.astype(np.float32)

    def combine(self, state, xs, base, out, start=0):
        xs -= base
        self._select(state, xs)
        majority = np.where(xs.sum(0) >= 0, np.float32(1), np.float32(-1))
        erased = (np.sign(xs) == majority) * state.coef.reshape(-1, 1)
        xs *= erased
        np.divide(xs.sum(0), np.maximum(erased.sum(0), np.float32(1e-6)), out=out)
        out += base
        return out
