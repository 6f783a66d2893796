"""Peak RSS of a merge stays within memory_budget plus the interpreter's fixed cost, measured the way
/usr/bin/time -v does (ru_maxrss of the merging process: anonymous and file-backed pages)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

BUDGET = 64 * 2**20
CHILD = """
import json, sys
from boom_ray.config import MergeConfig
from boom_ray.merge.request import MergeRequest, ModelInput
from boom_ray.merge.task import merge
method, paths, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
if method == "multislerp":
    req = MergeRequest(method, [ModelInput(p, {"weight": w}) for p, w in zip(paths, [0.3, 0.7])])
else:  # the second model is the base
    sce = method == "sce"
    req = MergeRequest(method, [ModelInput(paths[0], {"weight": 0.7, **({} if sce else {"density": 0.4})})],
                       paths[1], {"select_topk": 0.3} if sce else {})
manifest = merge(req, out, MergeConfig(memory_budget=int(BUDGET)), progress=False)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"maxrss_kib": int(hwm.split()[1])}))
""".replace("BUDGET", str(BUDGET))


def _peak_rss(method: str, paths: list[Path], out: Path) -> int:
    """Peak RSS in bytes of a fresh merging process, as `/usr/bin/time -v` reports it (where
    available; else the child's VmHWM: its own getrusage would inherit the big test process's
    high-water mark, which Linux carries across fork and exec)."""
    cmd = [sys.executable, "-c", CHILD, method, *map(str, paths), str(out)]
    if shutil.which("time") or Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True)
        return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kib"] * 1024


@pytest.mark.parametrize("method", ["multislerp", "ties", "della", "sce"])
def test_64mb_budget_merges_a_200mb_tensor_within_budget(tmp_path, method):
    """multislerp: two passes; ties: the radix select's histograms; della: row-aligned blocks,
    random masks, per-row ranks, an L1 pass; sce: radix select of the variances, an energy pass."""
    big, small = [], []
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        tensors = {"huge.weight": torch.randn(12_500, 4_000, generator=g),  # 200 MB of float32
                   "norm.weight": torch.randn(4_000, generator=g)}
        save_file(tensors, str(tmp_path / f"big{seed}.safetensors"))
        del tensors
        (tmp_path / f"big{seed}").mkdir()
        (tmp_path / f"big{seed}.safetensors").rename(tmp_path / f"big{seed}" / "model.safetensors")
        big.append(tmp_path / f"big{seed}")
        (tmp_path / f"small{seed}").mkdir()
        save_file({"huge.weight": torch.randn(8, 4_000, generator=g), "norm.weight": torch.randn(4_000, generator=g)},
                  str(tmp_path / f"small{seed}" / "model.safetensors"))
        small.append(tmp_path / f"small{seed}")
    fixed = _peak_rss(method, small, tmp_path / "out-small")  # the interpreter, torch and boom-ray imported
    peak = _peak_rss(method, big, tmp_path / "out-big")
    print(f"fixed {fixed / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    assert (tmp_path / "out-big" / "model.safetensors").stat().st_size > 200e6
    assert peak - fixed <= BUDGET, f"merge used {(peak - fixed) / 2**20:.1f} MiB over the fixed cost"
    # and it really streamed: far below the 600 MB that two inputs plus the output would take
    assert peak - fixed > BUDGET / 4
