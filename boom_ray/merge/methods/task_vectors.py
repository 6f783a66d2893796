"""Sparsified task-vector merges (mergekit's generalized task arithmetic): TIES, DARE, Model
Breadcrumbs and DELLA, with or without TIES's sign election, streamed in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from boom_ray.merge.methods.base import REQUIRED, Method, MergeMethodError, TensorState
from boom_ray.merge.methods.select import RadixSelect, stream_key, uniform

EPS_RESCALE = 1e-7


@dataclass
class TaskVectorState(TensorState):
    sparse: list[int] = field(default_factory=list)
    """Models whose task vector is sparsified (density < 1)."""
    zero: list[int] = field(default_factory=list)
    """Models that keep nothing (density <= 0, magnitude and DELLA sparsification)."""
    empty: dict[int, bool] = field(default_factory=dict)
    """Breadcrumbs: whether each sparsified model keeps nothing."""
    queries: list[tuple[int, str, int]] = field(default_factory=list)
    """(model, "low" | "high", k): the k-th largest |d_model| bounds what is kept from below / above."""
    kinds: list[str] = field(default_factory=list)
    """Each statistics pass: "hi" / "lo" (the radix select's two histograms) or "l1" (norms for rescale)."""
    thresholds: dict[tuple[int, str], float] = field(default_factory=dict)
    """(model, "low" | "high") -> the selected magnitude bound."""
    scale: np.ndarray | None = None
    """(n,) L1 rescale factor of each model (1 where not rescaled)."""
    select: RadixSelect | None = None
    row: int = 1
    """Elements per row that blocks must hold whole (DELLA ranks within rows)."""


class TaskVectorMerge(Method[TaskVectorState]):
    """mergekit 0.1.5's generalized task arithmetic, one subclass per method.

    Steps, per tensor: task vectors d_i = x_i - base; each is sparsified to a `density` (below);
    with `rescale`, the kept entries are scaled by |d_i|_1 / |kept d_i|_1 (unless either is below
    1e-7; L1 rescaling, as mergekit's `rescale: true`); each is multiplied by its `weight`. With
    sign election (the *ties* methods) a weighted entry survives only where its sign equals the
    sign of the sum of the weighted entries (0 counts as +), and the divisor of `normalize` is the
    sum of the surviving weights (0 -> 1); without it all entries are summed and the divisor is
    sum_i w_i (|.| < 1e-8 -> 1). The sum is divided by the divisor when `normalize`, scaled by
    `lambda` and added to the base. `int8_mask` is accepted and changes nothing (it is a memory
    option in mergekit). A density >= 1 leaves a task vector as it is (and unscaled).

    Streaming: k-th largest magnitudes come from an exact radix select (`select.RadixSelect`, two
    statistics passes), L1 norms from one more pass. Where several entries share the threshold
    magnitude all are kept, where mergekit keeps an arbitrary subset (only repeated magnitudes).
    """

    base = "required"
    sparsify: str | None = None  # "magnitude" | "random" | "outliers" | "della"
    consensus = False
    normalize = rescale = False
    extra_params: dict = {}
    """Per-model parameters besides weight and density (gamma, epsilon)."""
    scratch = 6
    state_type = TaskVectorState

    def __init__(self) -> None:
        self.shared = {"normalize": self.normalize, "lambda": 1.0, "int8_mask": False, "rescale": self.rescale}
        self.per_model = {"weight": REQUIRED, "density": 1.0, **self.extra_params}

    def start(self, state: TaskVectorState) -> None:
        n = state.numel
        dens = [mp["density"] for mp in state.model_params]
        state.sparse = [i for i, d in enumerate(dens) if d < 1]
        state.zero = [i for i, d in enumerate(dens) if d <= 0 and self.sparsify in ("magnitude", "della")]
        queries: list[tuple[int, str, int]] = []
        if self.sparsify == "magnitude":
            for i in state.sparse:
                if dens[i] > 0 and n > 0:
                    queries.append((i, "low", max(1, int(dens[i] * n))))
        elif self.sparsify == "outliers":
            state.empty = self._outlier_bounds(state, dens, queries)
        state.queries = [q for q in queries if q[2] < n or q[1] == "high"]
        kinds = ["hi", "lo"] if state.queries else []
        if state.params["rescale"] and state.sparse:
            kinds.append("l1")
        state.kinds = kinds
        state.scale = np.ones(len(dens))
        state.passes = len(kinds)
        if kinds[:1] == ["hi"]:
            state.select = RadixSelect([k for _, _, k in state.queries])
        state.coef = state.weights.astype(np.float32)

    def _outlier_bounds(self, state: TaskVectorState, dens: list[float],
                        queries: list[tuple[int, str, int]]) -> dict[int, bool]:
        """mergekit's magnitude_outliers keeps ascending ranks [n_bot, n_bot + target) of |d_i|: the
        entries at or below the (top + 1)-th largest and at or above the (top + target)-th
        largest, top = numel - n_bot - target. Returns which models keep nothing."""
        n, empty = state.numel, {}
        for i in state.sparse:
            target = int(dens[i] * n)
            n_top = int(state.model_params[i]["gamma"] * n)
            n_bot = max(0, n - target - n_top)
            empty[i] = target <= 0
            if target <= 0:
                continue
            top = n - n_bot - target
            queries.append((i, "low", top + target))
            if top > 0:
                queries.append((i, "high", top + 1))
        return empty

    def statistics(self, state, pass_index, xs, base, start=0):
        kind = state.kinds[pass_index]
        xs -= base
        if kind == "l1":
            before = np.abs(xs).sum(1, dtype=np.float64)
            self._sparsify(state, xs, start)
            return np.stack([before, np.abs(xs).sum(1, dtype=np.float64)])
        keys = np.abs(xs[[i for i, _, _ in state.queries]])
        return state.select.histogram(0 if kind == "hi" else 1, keys)

    def finish(self, state: TaskVectorState, pass_index: int, total: np.ndarray) -> None:
        kind = state.kinds[pass_index]
        if kind == "l1":
            before, after = total
            for i in state.sparse:
                if before[i] >= EPS_RESCALE and after[i] >= EPS_RESCALE:
                    state.scale[i] = np.float32(before[i]) / np.float32(after[i])
            return
        select = state.select
        select.finish(0 if kind == "hi" else 1, total)
        if kind == "lo":
            for (i, side, _), value in zip(state.queries, select.values):
                state.thresholds[(i, side)] = value

    def _sparsify(self, state: TaskVectorState, d: np.ndarray, start: int) -> None:
        """Zero the dropped entries of the task vectors `d` (rows, in place), unscaled."""
        th = state.thresholds
        for i in state.sparse:
            density = state.model_params[i]["density"]
            if i in state.zero or (self.sparsify == "outliers" and state.empty[i]):
                d[i] = 0
            elif self.sparsify in ("magnitude", "outliers"):
                mag = np.abs(d[i])
                if (i, "low") in th:
                    d[i] *= mag >= th[(i, "low")]
                if (i, "high") in th:
                    d[i] *= mag <= th[(i, "high")]
            else:
                u = uniform(stream_key(state.name, i, self.sparsify), start, d.shape[1])
                probs = density if self.sparsify == "random" else self._della_probs(state, i, d[i])
                d[i] *= u < probs

    def combine(self, state, xs, base, out, start=0):
        xs -= base
        deltas = xs
        self._sparsify(state, deltas, start)
        w = state.coef.reshape(-1, 1)
        deltas *= (state.scale * state.weights).astype(np.float32).reshape(-1, 1)
        if self.consensus:
            majority = np.where(deltas.sum(0) >= 0, np.float32(1), np.float32(-1))
            mask = (np.sign(deltas) == majority).astype(np.float32)
            mixed = (deltas * mask).sum(0)
            divisor = (w * mask).sum(0)
            divisor[divisor == 0] = 1
        else:
            mixed = deltas.sum(0)
            total = np.float32(state.coef.sum())
            divisor = total if abs(total) >= 1e-8 else np.float32(1)
        if state.params["normalize"]:
            mixed /= divisor
        if state.params["lambda"] != 1:
            mixed *= np.float32(state.params["lambda"])
        np.add(base, mixed, out=out)
        return out

    def _della_probs(self, state: TaskVectorState, i: int, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def alignment(self, state: TaskVectorState) -> int:
        return state.row


class Ties(TaskVectorMerge):
    """TIES (mergekit `ties`): magnitude sparsification (the top k_i = max(1, int(density * numel))
    entries of |d_i|; density <= 0 keeps none), sign election, `normalize` on by default.
    `rescale: true` (L1) is supported too."""

    name = "ties"
    sparsify, consensus, normalize = "magnitude", True, True


class DareTies(TaskVectorMerge):
    """DARE-TIES (mergekit `dare_ties`): random sparsification (each entry kept with probability
    `density`), L1 `rescale` on by default, sign election, `normalize` off by default.

    The random mask is not torch's: entry j of model i is kept when u < density for a SplitMix64
    uniform u of (tensor name, i, j) (`select.uniform`), so a merge is reproducible and the same
    whether a tensor is streamed or not, but its masks differ from any mergekit run (mergekit
    draws from torch's global generator). Equality with mergekit is therefore checked given the
    same masks (tests/merge/test_sparse_methods.py) and statistically (benchmarks/merge.py)."""

    name = "dare_ties"
    sparsify, consensus, rescale = "random", True, True


class DareLinear(TaskVectorMerge):
    """DARE (mergekit `dare_linear`): random sparsification as in `dare_ties` (same masks, same
    note on randomness), L1 `rescale` on by default, no sign election, `normalize` off."""

    name = "dare_linear"
    sparsify, rescale = "random", True


class Breadcrumbs(TaskVectorMerge):
    """Model Breadcrumbs (mergekit `breadcrumbs`): of |d_i| sorted ascending, the entries ranked
    n_bot .. n_bot + target - 1 are kept, target = int(density * numel), n_top = int(gamma *
    numel) (`gamma` per model, default 0.01), n_bot = max(0, numel - target - n_top): the largest
    n_top outliers and the smallest are dropped. No sign election, no normalize, no rescale by
    default."""

    name = "breadcrumbs"
    sparsify = "outliers"
    extra_params = {"gamma": 0.01}


class BreadcrumbsTies(Breadcrumbs):
    """Model Breadcrumbs with sign election (mergekit `breadcrumbs_ties`); as `breadcrumbs`."""

    name = "breadcrumbs_ties"
    consensus = True


class Della(TaskVectorMerge):
    """DELLA (mergekit `della`): magnitude-ranked random sparsification (MagPrune), sign election,
    `normalize` and L1 `rescale` on by default. Within each row of a 2-D tensor (a 1-D tensor is
    one row), entries are ranked 1 .. c by |d_i| ascending; rank r is kept with probability
    (density - epsilon) + 2 epsilon (r - 1) / (c - 1), `epsilon` per model (default 0.15;
    density +- epsilon must lie in (0, 1)). density <= 0 keeps none.

    Blocks hold whole rows (the executor aligns them), so a row must fit a block (about
    merge.memory_budget / 8 / (6 * models) elements). The random mask is a SplitMix64 uniform of
    (tensor name, model, position), not torch's, as for `dare_ties`; equal magnitudes are ranked
    by numpy's sort where mergekit uses torch's. A one-column tensor (c = 1), where mergekit's
    rank normalisation divides by zero, uses probability density - epsilon. Tensors of more than
    two dimensions are not supported."""

    name = "della"
    sparsify, consensus, normalize, rescale = "della", True, True, True
    extra_params = {"epsilon": 0.15}

    def check(self, shared, per_model):
        for i, mp in enumerate(per_model):
            d, e = mp["density"], mp["epsilon"]
            if 0 < d < 1 and (d + e >= 1 or d - e <= 0):
                raise MergeMethodError(f"{self.name}: model {i}: epsilon {e} must keep density +- epsilon "
                                       f"in (0, 1) (density {d})")

    def start(self, state: TaskVectorState) -> None:
        if len(state.shape) > 2:
            raise MergeMethodError(f"{self.name}: tensors of more than 2 dimensions are not supported")
        super().start(state)
        if state.sparse and len(state.shape) == 2:
            state.row = state.numel // max(1, state.shape[0])
        elif state.sparse:
            state.row = state.numel

    def _della_probs(self, state, i, d):
        """Keep probabilities of model i's entries `d` (whole rows of `state.row`)."""
        mp, cols = state.model_params[i], state.row
        mag = np.abs(d).reshape(-1, cols)
        ranks = np.argsort(np.argsort(mag, axis=1, kind="stable"), axis=1, kind="stable").astype(np.float32)
        rank_norm = ranks / np.float32(cols - 1) if cols > 1 else np.zeros_like(ranks)
        np.clip(rank_norm, 0, 1, out=rank_norm)
        return (mp["density"] - mp["epsilon"] + rank_norm * np.float32(2 * mp["epsilon"])).reshape(-1)


class DellaLinear(Della):
    """DELLA without sign election (mergekit `della_linear`): as `della`, `normalize` off."""

    name = "della_linear"
    consensus, normalize = False, False
