"""mergekit's parameter settings: a number or bool, a per-layer gradient (a list, interpolated
over the layers) or a list of `filter:` entries (`{filter: SUBSTRING, value: SETTING}`, the first
whose filter occurs in the tensor name wins; a missing filter or `*` matches every tensor).

A setting is resolved per tensor from the tensor's name and its layer position t (mergekit
0.1.5's `evaluate_setting` and planner): t = i / (L - 1) for a tensor of layer i of L (1 when
there is one layer), and t = 0 for tensors outside the layers (embeddings, final norm, heads:
mergekit plans both its pre- and post-layer weights with t = 0). A numeric gradient [v_0 ...
v_{n-1}] gives (1 - f) v_j + f v_{j+1} at j + f = t (n - 1); a list holding a bool picks
v_int(t (n - 1)). mergekit finds the layers from its architecture definitions; here the layer
index is the number after `layers.`, `layer.`, `h.` or `blocks.` in the tensor name, and L is
the largest index plus one (the same for Qwen3, Llama-style and BERT checkpoints).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

SCALAR = (int, float, bool)
LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


class SettingError(ValueError):
    """A setting that is neither a scalar, a gradient nor a list of filter entries."""


def check_setting(value: Any) -> None:
    """Raise SettingError for anything mergekit would not take as a parameter setting."""
    if isinstance(value, SCALAR):
        return
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SettingError(f"expected a number, a bool, a non-empty list (per-layer gradient) or filter "
                           f"entries, got {value!r}")
    if all(isinstance(v, SCALAR) for v in value):
        return
    for entry in value:
        if not isinstance(entry, dict) or "value" not in entry or set(entry) - {"filter", "value"}:
            raise SettingError(f"a list must be all numbers (a gradient) or all {{filter, value}} entries, "
                               f"got {entry!r}")
        if entry.get("filter") is not None and not isinstance(entry["filter"], str):
            raise SettingError(f"filter must be a string, got {entry['filter']!r}")
        check_setting(entry["value"])


def with_fallback(value: Any, fallback: Any) -> Any:
    """`value`, falling back to `fallback` for tensors that no filter entry of `value` matches
    (mergekit then looks at the next, lower-precedence place the parameter is set)."""
    if fallback is None or not isinstance(value, (list, dict)):
        return value
    entries = [value] if isinstance(value, dict) else value
    if all(isinstance(v, SCALAR) for v in entries):
        return value
    return [*entries, {"filter": None, "value": fallback}]


def evaluate(value: Any, tensor_name: str, t: float) -> Any:
    """The setting's value for one tensor (None when no filter entry matches)."""
    if isinstance(value, SCALAR):
        return value
    if isinstance(value, dict):
        value = [value]
    if all(isinstance(v, SCALAR) for v in value):
        if any(isinstance(v, bool) for v in value):
            return value[int(t * (len(value) - 1))]
        scaled = t * (len(value) - 1)
        i0 = int(scaled)
        i1 = min(len(value) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * value[i0] + frac * value[i1]
    for entry in value:
        flt = entry.get("filter")
        if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
            return evaluate(entry["value"], tensor_name, t)
    return None


def layer_positions(names: Iterable[str]) -> dict[str, float]:
    """Each tensor's t: i / (L - 1) for layer i of L layers (1 if L == 1), 0 outside the layers."""
    names = list(names)
    index = {}
    for name in names:
        m = LAYER.search(name)
        if m:
            index[name] = int(m.group(1))
    layers = max(index.values()) + 1 if index else 0
    return {n: (0.0 if n not in index else (index[n] / (layers - 1) if layers > 1 else 1.0)) for n in names}


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
