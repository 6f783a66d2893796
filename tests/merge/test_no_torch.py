"""The merge package is torch-free (numpy, and numba for its fused kernels): `boom merge` starts
in well under a second because nothing under boom_ray.merge imports torch, the evaluation code or
the model code."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import pkgutil, importlib, sys
import boom_ray.merge as merge
names = [m.name for m in pkgutil.walk_packages(merge.__path__, "boom_ray.merge.")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "boom_ray.eval", "boom_ray.model")))
print(len(names), heavy)
"""


def test_merge_package_imports_no_torch_eval_or_model():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) >= 8, "every submodule of boom_ray.merge was imported"
    assert out[1].strip() == "[]", f"boom_ray.merge pulled in {out[1].strip()}"
