"""Texts per second: boom-ray's encoder (Embedder.encode) vs sentence-transformers' encode.

    .venv/bin/python benchmarks/embed_throughput.py                 # 2048 texts, batch 32, 5 runs
    .venv/bin/python benchmarks/embed_throughput.py --n 512 --repeats 3

Same process, same model files (the bundled all-MiniLM-L6-v2), same texts, same batch size, same
torch thread count. Runs alternate between the two (A B, B A, ...) so drift in machine load hits
both alike; the figure is the median over runs. Texts are WordNet glosses joined 1 to 6 at a time
(varied lengths, like a passage corpus) or, without WordNet, seeded synthetic sentences. The anchor
is sentence-transformers; the target is a ratio >= 1.0. Results go to benchmarks/_out/embed_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    glosses: list[str] = []
    data = Path("/usr/share/wordnet/data.noun")
    if data.is_file():
        for line in data.read_text(errors="ignore").splitlines():
            if line and not line.startswith(" ") and "| " in line:
                glosses.append(line.split("| ", 1)[1].strip())
    if not glosses:
        words = "model data merge bag query passage vector train cluster label score ranking".split()
        glosses = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(5000)]
    rng.shuffle(glosses)
    return ["; ".join(rng.sample(glosses, rng.randint(1, 6))) for _ in range(n)]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a shared machine the CPU time is the steadier
    figure: other processes' load stretches wall time, not the work this process does."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "_out" / "embed_throughput.json"))
    args = p.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from boom_ray.config import BUNDLED_MINILM
    from boom_ray.model.embedder import Embedder
    from boom_ray.model.settings import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model_path(BUNDLED_MINILM)
    texts = make_texts(args.n)
    ours = Embedder.from_pretrained(path)
    st = SentenceTransformer(path, device="cpu")
    st.eval()

    def run_ours():
        return ours.encode(texts, batch_size=args.batch_size)

    def run_st():
        return st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

    # Same vectors first: a fast encoder that computes something else is no result.
    max_diff = float(np.abs(ours.encode(texts[:256], batch_size=args.batch_size)
                            - st.encode(texts[:256], batch_size=args.batch_size)).max())
    run_ours(), run_st()  # warm-up (allocator, kernels)
    t_ours, t_st = [], []
    for r in range(args.repeats):
        pair = [(t_ours, run_ours), (t_st, run_st)]
        for bucket, fn in (pair if r % 2 == 0 else pair[::-1]):
            bucket.append(timed(fn))
    ours_tps = args.n / statistics.median(w for w, _ in t_ours)
    st_tps = args.n / statistics.median(w for w, _ in t_st)
    ours_cpu = args.n / statistics.median(c for _, c in t_ours)
    st_cpu = args.n / statistics.median(c for _, c in t_st)
    result = {
        "n_texts": args.n, "batch_size": args.batch_size, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
        "mean_chars": sum(map(len, texts)) / len(texts), "max_abs_diff_vs_st": max_diff,
        "boom_ray_texts_per_s": round(ours_tps, 1), "sentence_transformers_texts_per_s": round(st_tps, 1),
        "ratio": round(ours_tps / st_tps, 3),
        "boom_ray_texts_per_cpu_s": round(ours_cpu, 1), "sentence_transformers_texts_per_cpu_s": round(st_cpu, 1),
        "cpu_ratio": round(ours_cpu / st_cpu, 3),
        "boom_ray_wall_cpu_seconds": [[round(w, 3), round(c, 3)] for w, c in t_ours],
        "sentence_transformers_wall_cpu_seconds": [[round(w, 3), round(c, 3)] for w, c in t_st],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\n| {args.n} texts, batch {args.batch_size}, {torch.get_num_threads()} threads | "
          f"boom-ray {ours_tps:.1f} texts/s | sentence-transformers {st_tps:.1f} texts/s | "
          f"ratio {ours_tps / st_tps:.2f} | per CPU-second: {ours_cpu:.1f} vs {st_cpu:.1f}, "
          f"ratio {ours_cpu / st_cpu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
