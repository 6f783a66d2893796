"""Config values with a syntax of their own: sizes in bytes (``"512MB"``, ``"1GiB"``: merge budgets,
shards) and names that become one folder of the work dir (bag groups, ablation cells)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KIB": 2**10, "M": 10**6, "MB": 10**6,
               "MIB": 2**20, "G": 10**9, "GB": 10**9, "GIB": 2**30, "T": 10**12, "TB": 10**12,
               "TIB": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"512MB"``, ``"1GiB"`` or ``"5e9"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512MB, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2) is None and not match.group(1):
        raise ValueError(f"expected a size such as 512MB or 1GiB, got {value!r}")
    unit = (match.group(2) or "").upper()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit in {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


_FOLDER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_folder_name(name: str, what: str) -> str:
    """`name` when it can name one folder on any filesystem (letters, digits, '_', '.', '-'), else
    ValueError: such names become `<workdir>/bags/<name>/` or `<workdir>/<cell>/`."""
    if not isinstance(name, str) or not _FOLDER_NAME_RE.fullmatch(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '_', '.' or '-' (it names a folder)")
    return name
