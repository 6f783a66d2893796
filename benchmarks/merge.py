"""Merge benchmark: boom-ray's streaming merge against mergekit 0.1.5 and the I/O floor.

    .venv/bin/python benchmarks/merge.py --skip-equality --runs 5 --mergekit-runs 2   # both sets, ~12 min
    .venv/bin/python benchmarks/merge.py --skip-equality --sets small --runs 2 --mergekit-runs 1
    .venv/bin/python benchmarks/merge.py --skip-big      # only the float32 equality set
    .venv/bin/python benchmarks/merge.py --skip-big --only della --mergekit /tmp/mk/bin/mergekit-yaml

1. Equality (benchmarks/merge_equality.py): four tiny float32 Qwen3 models; every method both
   tools support (with per-layer gradients and filters) is run by mergekit-yaml and by `boom
   merge` from the SAME YAML, and every output tensor is compared: max |boom - mergekit| / max
   |mergekit| per tensor, the worst tensor reported (target <= 1e-5); random-mask methods also
   statistically (see that module).
2. Timings on two sets of five random bf16 checkpoints, merged by multislerp (or `--method
   linear`) with weights 0.2 ... 1.0 from one YAML (dtype bfloat16: mergekit computes in bfloat16, boom-ray in float32; both
   write bfloat16):
   - small: Qwen3-0.6B shapes with 2 layers (hidden 1024, vocab 151936; 0.37 GB each, 1.9 GB in
     all): fits mergekit in memory, so mergekit / boom is speed alone.
   - big: Qwen3-4B shapes with 4 layers (hidden 2560, intermediate 9728, vocab 151936; 1 GB
     shards, 1.59 GB each, 7.9 GB in all): mergekit peaks near 20 GB on this 24 GiB box, what
     users of small machines meet.
   Each set: `--runs` rounds of the I/O floor (benchmarks/merge_floor.py: mmap, as many threads as
   boom merge) and `boom merge`, plus mergekit in the first `--mergekit-runs`, all subprocesses
   under `/usr/bin/time -v`, each started from the same state (benchmarks/merge_bench.py says
   which state and why). Medians and spreads; each invocation is compared with the previous one.

mergekit is installed by this script into its own venv, benchmarks/_out/mergekit-venv (git
ignored): a plain venv, `pip install torch==2.13.0` first (the local CPU wheel, so nothing pulls
CUDA wheels), then `pip install mergekit==0.1.5`; or give an installed one with --mergekit.
Results go to benchmarks/_out/merge_results.json (each invocation also appended to
merge_timing_history.json) and are printed as the markdown recorded in benchmarks/RESULTS.md.
Checkpoints are kept in benchmarks/_out/merge_sets (reused by the next invocation) unless --clean.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from boom_ray.merge.blocks import default_threads
from merge_bench import agreement, markdown, run_set
from merge_equality import equality, max_rel_diff

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "_out"
VENV = OUT / "mergekit-venv"
PY = sys.executable
BOOM = [PY, "-m", "boom_ray.cli", "merge"]

QWEN3_4B_4L = dict(hidden_size=2560, intermediate_size=9728, num_attention_heads=32, num_key_value_heads=8,
                   head_dim=128, vocab_size=151936, num_hidden_layers=4, tie_word_embeddings=True)
QWEN3_06B_2L = dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8,
                    head_dim=128, vocab_size=151936, num_hidden_layers=2, tie_word_embeddings=True)
SETS = {"small": QWEN3_06B_2L, "big": QWEN3_4B_4L}
MERGEKIT_GIB = {"small": 6, "big": 15}
"""GiB of available memory mergekit needs on each set (it peaks near 17 GiB on the big one): on a
shared machine, skip its run rather than get it (or a neighbour) OOM-killed."""


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def ensure_mergekit() -> Path:
    exe = VENV / "bin" / "mergekit-yaml"
    if not exe.exists():
        sh(["python3", "-m", "venv", str(VENV)])
        pip = str(VENV / "bin" / "pip")
        sh([pip, "install", "-q", "torch==2.13.0"])
        sh([pip, "install", "-q", "mergekit==0.1.5"])
    return exe


# ---------------------------------------------------------------- checkpoints

def qwen3_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, i, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
        })
    shapes["model.norm.weight"] = (h,)
    return shapes


def write_random_checkpoint(path: Path, seed: int, cfg: dict, shard_bytes: int = 10**9) -> int:
    """Random bf16 weights (std 0.02, norms around 1) in shards of at most `shard_bytes`, with an
    index and a Qwen3 config.json; generated in 16M-element pieces to keep memory low."""
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    shapes = qwen3_shapes(cfg)
    shards, cur, size = [], {}, 0
    for name, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        if cur and size + 2 * n > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        t = torch.empty(n, dtype=torch.bfloat16)
        for a in range(0, n, 1 << 24):
            m = min(1 << 24, n - a)
            piece = torch.randn(m, generator=gen)
            if name.endswith("norm.weight"):
                piece = piece.mul_(0.1).add_(1.0)
            else:
                piece = piece.mul_(0.02)
            t[a:a + m] = piece
        cur[name] = t.view(shape)
        size += 2 * n
    shards.append(cur)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * 2
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "torch_dtype": "bfloat16",
              "rms_norm_eps": 1e-6, "max_position_embeddings": 40960, "rope_theta": 1000000.0, **cfg}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return total


# ---------------------------------------------------------------- timings

def model_set(name: str, method: str = "multislerp") -> tuple[list[Path], int, Path]:
    """The set's five checkpoints (generated once, kept), its output size and the merge YAML."""
    work = OUT / "merge_sets" / name
    work.mkdir(parents=True, exist_ok=True)
    models = [work / f"bag{w}" for w in (20, 40, 60, 80, 100)]
    sizes = []
    for seed, m in enumerate(models):
        if not (m / "model.safetensors.index.json").exists():
            t0 = time.perf_counter()
            sizes.append(write_random_checkpoint(m, seed, SETS[name]))
            print(f"generated {name}/{m.name}: {sizes[-1] / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            sizes.append(json.loads((m / "model.safetensors.index.json").read_text())["metadata"]["total_size"])
    # dtype bfloat16: mergekit computes in it (boom-ray always computes in float32). With dtype
    # float32 mergekit 0.1.5 was OOM-killed at 22 GB of anonymous RSS on this 24 GiB machine.
    cfg = {"merge_method": method, "dtype": "bfloat16",
           "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, [0.2, 0.4, 0.6, 0.8, 1.0])]}
    ypath = work / f"{method}.yaml"
    ypath.write_text(yaml.safe_dump(cfg))
    return models, sizes[0], ypath


def timings(name: str, mergekit: Path | None, runs: int, mergekit_runs: int, budget: str, threads: int,
            method: str) -> dict:
    models, out_bytes, ypath = model_set(name, method)
    work = OUT / "merge_sets" / name
    res = run_set(name, models, out_bytes, ypath, work, runs=runs, mergekit_runs=mergekit_runs, mergekit=mergekit,
                  boom=BOOM, threads=threads, budget=budget, mergekit_gib=MERGEKIT_GIB[name])
    boom_out, mk_out = work / f"{name}-out-boom", work / f"{name}-out-mk"
    if boom_out.exists() and mk_out.exists():
        res["max_rel_diff_vs_mergekit"], res["worst_tensor"] = max_rel_diff(boom_out, mk_out)
    res["load_average"] = os.getloadavg()
    res["method"] = method
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["small", "big"], choices=list(SETS))
    ap.add_argument("--runs", type=int, default=5, help="floor and boom-ray runs per set")
    ap.add_argument("--mergekit-runs", type=int, default=2, help="how many of those runs also time mergekit "
                    "(about 1 minute each on the big set)")
    ap.add_argument("--method", default="multislerp", choices=["multislerp", "linear"],
                    help="multislerp reads its inputs twice (statistics, then the weighted sum); linear once, "
                    "the floor's work plus the arithmetic")
    ap.add_argument("--budget", default="512MiB", help="boom-ray memory_budget")
    ap.add_argument("--threads", type=int, default=default_threads(), help="boom-ray threads, and the floor's")
    ap.add_argument("--skip-equality", action="store_true")
    ap.add_argument("--only", help="equality cases whose name contains this")
    ap.add_argument("--mergekit", type=Path, help="an installed mergekit-yaml to use instead of the script's venv")
    ap.add_argument("--no-mergekit", action="store_true", help="time only the floor and boom-ray")
    ap.add_argument("--skip-big", action="store_true", help="no timings (only the equality set)")
    ap.add_argument("--clean", action="store_true", help="delete the generated checkpoints and outputs at the end")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    mergekit = None if args.no_mergekit and args.skip_equality else (args.mergekit or ensure_mergekit())
    results_path = OUT / "merge_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__}
    if not args.skip_equality:
        results["equality"] = results.get("equality", {}) | equality(mergekit, BOOM, OUT, args.only)
    if not args.skip_big:
        history_path = OUT / "merge_timing_history.json"
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        for name in args.sets:
            res = timings(name, None if args.no_mergekit else mergekit, args.runs,
                          min(args.mergekit_runs, args.runs), args.budget, args.threads, args.method)
            before = next((h for h in reversed(history)
                           if h["set"] == name and h.get("method", "multislerp") == args.method), None)
            res["vs_previous_invocation"] = agreement(res, before)
            key = name if args.method == "multislerp" else f"{name}-{args.method}"
            results.setdefault("timings", {})[key] = res
            history.append(res)
            history_path.write_text(json.dumps(history, indent=2))
            print(markdown(res, res["vs_previous_invocation"]), flush=True)
        if args.clean:
            shutil.rmtree(OUT / "merge_sets", ignore_errors=True)
    results_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
