"""TIES: sparsified task vectors with sign election, streamed with an exact radix select."""

from __future__ import annotations

import numpy as np

from boom_ray.merge.methods.base import REQUIRED, Method, MergeMethodError


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

    def check(self, shared, per_model):
        if shared["rescale"]:
            raise MergeMethodError("ties: rescale: true is not supported")

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
