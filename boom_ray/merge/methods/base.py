"""The merge-method protocol (validate / resolve / start / statistics / finish / combine), the typed
forms a request's parameters take on the way (`Settings`, then `TensorParams` per tensor, then a
method's `TensorState`) and the shared helpers; merge/driver.py drives the protocol."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from boom_ray.errors import BoomError
from boom_ray.merge.methods.params import SettingError, check_setting, evaluate, is_finite_number, with_fallback

REQUIRED = object()
log = logging.getLogger(__name__)
_WARNED: set[str] = set()


class MergeMethodError(BoomError):
    """Parameters a merge method cannot use, or a tensor it cannot merge."""


class Settings(NamedTuple):
    """A request's parameters as `Method.validate` returns them, defaults filled in: still mergekit
    settings (numbers, per-layer gradients, filter lists; see `params`), for every tensor."""

    shared: dict[str, Any]
    per_model: list[dict[str, Any]]


class TensorParams(NamedTuple):
    """One tensor's parameters as `Method.resolve` returns them: numbers and bools only."""

    shared: dict[str, Any]
    per_model: list[dict[str, float]]

    @property
    def weights(self) -> np.ndarray:
        """(n,) float64: each model's `weight` (1 for methods that take none)."""
        return np.array([mp.get("weight", 1.0) for mp in self.per_model], dtype=np.float64)


@dataclass
class TensorState:
    """What a method knows about the tensor being merged: the inputs' weights and parameters plus
    what its passes gather; `passes` is how many statistics passes it still needs, and `coef`
    (float32, one per model unless a method says otherwise) what `combine` mixes the rows with.
    Methods that keep more subclass it with typed fields (`Method.state_type`)."""

    weights: np.ndarray  # (n,) float64
    model_params: list[dict[str, float]]
    params: dict[str, Any]
    numel: int
    shape: tuple[int, ...] = ()
    name: str = ""
    passes: int = 0
    coef: np.ndarray | None = None  # float32


S = TypeVar("S", bound=TensorState)


class Method(Generic[S]):
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
    state_type: type[TensorState] = TensorState
    """The state `new_state` builds: a subclass with the method's own typed fields."""

    def validate(self, n_models: int, has_base: bool, params: dict[str, Any],
                 model_params: list[dict[str, Any]]) -> Settings:
        """Settings with defaults filled in (still gradients or filter lists where given; `resolve`
        turns them into one tensor's numbers); a clear error for anything this method cannot use.
        A per-model parameter set in `params` applies to every model that does not set it (and to
        tensors that none of a model's own filter entries match), as in mergekit."""
        if self.base == "required" and not has_base:
            raise MergeMethodError(f"{self.name} needs a base_model")
        if self.base == "unused" and has_base:
            raise MergeMethodError(f"{self.name} takes no base_model (list it under models with a weight instead)")
        if n_models < self.min_models or (self.max_models is not None and n_models > self.max_models):
            want = self.min_models if self.max_models == self.min_models else f"at least {self.min_models}"
            raise MergeMethodError(f"{self.name} merges {want} model(s) besides the base, got {n_models}")
        known = set(self.shared) | set(self.per_model)
        unused: dict[str, list[int | None]] = {key: [None] for key in params if key not in known}
        for i, mp in enumerate(model_params):
            for key in mp:
                if key not in self.per_model:
                    unused.setdefault(key, []).append(i)
        self._warn_unused(unused)
        params = {k: v for k, v in params.items() if k in known}
        model_params = [{k: v for k, v in mp.items() if k in self.per_model} for mp in model_params]
        for key, value in params.items():
            self._check(key, value, "")
        shared = {}
        for key, default in self.shared.items():
            if params.get(key, default) is REQUIRED:
                raise MergeMethodError(f"{self.name}: parameter {key!r} is required")
            shared[key] = with_fallback(params[key], None if default is REQUIRED else default) if key in params else default
        per_model = []
        for i, mp in enumerate(model_params):
            filled = {}
            for key, default in self.per_model.items():
                if key in mp:
                    self._check(key, mp[key], f"model {i}: ")
                fallback = params.get(key, default)
                if key not in mp and fallback is REQUIRED:
                    raise MergeMethodError(f"{self.name}: model {i} needs parameter {key!r}")
                fallback = None if fallback is REQUIRED else with_fallback(fallback, None if default is REQUIRED
                                                                           else default)
                filled[key] = with_fallback(mp[key], fallback) if key in mp else fallback
            per_model.append(filled)
        return Settings(shared, per_model)

    def _warn_unused(self, unused: dict[str, list[int | None]]) -> None:
        """One warning line per parameter this method does not define (`unused`: where it is set,
        None for the top level, else model indices). mergekit reads only the parameters a method
        defines and ignores the rest (mergekit/plan.py), so a YAML that mergekit runs runs here
        too, and a misspelt name is still pointed out. Said once per process: a sweep validates
        the same request in several places."""
        takes = ", ".join(sorted(set(self.shared) | set(self.per_model))) or "none"
        for key, where in sorted(unused.items(), key=lambda kv: str(kv[0])):
            models = [str(i) for i in where if i is not None]
            places = (["top level"] if None in where else []) + \
                ([f"model{'s' if len(models) > 1 else ''} {', '.join(models)}"] if models else [])
            line = (f"{self.name}: ignoring parameter {key!r} ({'; '.join(places)}), which {self.name} does not "
                    f"use (mergekit ignores it too; {self.name} takes: {takes})")
            if line not in _WARNED:
                _WARNED.add(line)
                log.warning("%s", line)

    def _check(self, key: str, value: Any, where: str) -> None:
        try:
            check_setting(value)
        except SettingError as exc:
            raise MergeMethodError(f"{self.name}: {where}parameter {key!r}: {exc}") from None

    def resolve(self, settings: Settings, tensor_name: str, t: float) -> TensorParams:
        """One tensor's parameters (numbers and bools) from validated settings, for the tensor
        named `tensor_name` at layer position `t` (see `params`)."""
        out_shared = {}
        for key, setting in settings.shared.items():
            value = evaluate(setting, tensor_name, t)
            if value is None:
                raise MergeMethodError(f"{self.name}: parameter {key!r} has no value for tensor {tensor_name!r}")
            if not isinstance(value, bool) and not is_finite_number(value):
                raise MergeMethodError(f"{self.name}: parameter {key!r} must be a number, got {value!r}")
            out_shared[key] = value
        out_models = []
        for i, mp in enumerate(settings.per_model):
            filled = {}
            for key, setting in mp.items():
                value = evaluate(setting, tensor_name, t)
                if value is None:
                    raise MergeMethodError(f"{self.name}: model {i} has no {key!r} for tensor {tensor_name!r}")
                if not is_finite_number(value):
                    raise MergeMethodError(f"{self.name}: model {i}: {key!r} must be a finite number, got {value!r}")
                filled[key] = float(value)
            out_models.append(filled)
        self.check(out_shared, out_models)
        return TensorParams(out_shared, out_models)

    def check(self, shared: dict[str, Any], per_model: list[dict[str, Any]]) -> None:
        """Method-specific checks of one tensor's resolved parameters (raise MergeMethodError)."""

    def new_state(self, params: TensorParams, numel: int, shape: tuple[int, ...] = (), name: str = "") -> TensorState:
        """A tensor's state (of `state_type`) from its resolved parameters, started."""
        state = self.state_type(params.weights, params.per_model, params.shared, numel, tuple(shape), name)
        self.start(state)
        return state

    def start(self, state: S) -> None:
        """Set `state.passes` and anything the passes need."""

    def alignment(self, state: S) -> int:
        """Blocks of this tensor hold a multiple of this many elements (whole rows, for methods
        that look at rows); blocks start at multiples of it."""
        return 1

    def statistics(self, state: S, pass_index: int, xs: np.ndarray,
                   base: np.ndarray | None, start: int = 0) -> np.ndarray:
        """This block's share of pass `pass_index`'s statistics: an array that sums over blocks.
        `start` is the block's first element in the flat tensor. Runs concurrently on several
        blocks: it may modify `xs` (scratch) but not `state`."""
        raise NotImplementedError

    def finish(self, state: S, pass_index: int, total: np.ndarray) -> None:
        """Use the summed statistics of a pass (set `state.coef` or what the next pass needs)."""
        raise NotImplementedError

    def weighted_sum(self, state: S, has_base: bool) -> np.ndarray | None:
        """The coefficients c when `combine` of this tensor (its passes finished) is exactly
        sum_i c_i x_i over the models: bfloat16 inputs then take a fused kernel
        (`driver`). None where it is anything else."""
        return None

    def gram_statistics(self, state: S, pass_index: int, has_base: bool) -> bool:
        """Whether pass `pass_index`'s statistics are `gram(xs)` of the models, as is (bfloat16
        inputs then take a fused kernel: `driver`)."""
        return False

    def combine(self, state: S, xs: np.ndarray, base: np.ndarray | None, out: np.ndarray,
                start: int = 0) -> np.ndarray:
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


def group_gram(xs: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group Gram matrices, (n_groups, n, n) in float64: entry [g, i, j] sums xs[i] * xs[j]
    over the elements whose group is g (rows or columns of a tensor, for the methods that merge
    row by row). Sums over any blocks, like `gram`."""
    n = len(xs)
    out = np.empty((n_groups, n, n))
    for i in range(n):
        for j in range(i, n):
            out[:, i, j] = out[:, j, i] = np.bincount(groups, weights=xs[i] * xs[j], minlength=n_groups)
    return out
