"""Bagging at scale: `boom bag` against the plain-pyarrow floor, in the same run.

    .venv/bin/python benchmarks/bagging.py --rows 700000 2800000 --repeats 3

For each corpus size it writes a synthetic corpus of realistic shape (30 tasks of Zipf-skewed
sizes; a query of ~12 words, 1 positive and 7 negatives of ~60 words each, ~3 KB a row), then
alternates runs of
  floor: read every file with pyarrow's multithreaded JSON reader and write the same bytes the
         five bags hold (0.2 + 0.4 + 0.6 + 0.8 + 1.0 = 3x the corpus) as Parquet, nothing else;
  boom:  `boom bag` with the five default bags on a fresh 2-CPU local Ray (start-up included),
and reports medians of wall time and of peak RSS (the sum over the whole process tree, Ray's
raylet, GCS and workers included, sampled every 50 ms). Alternating keeps both under the same
machine noise. Results go to benchmarks/_out/bagging/results.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "_out" / "bagging"
N_TASKS = 30
WORDS = ("time person year way day thing man world life hand part child eye woman place work week "
         "case point government company number group problem fact be have do say get make go know "
         "take see come think look want give use find tell ask seem feel try leave call good new first "
         "last long great little own other old right big high different small large next early young "
         "important few public bad same able to of in for on with at by from up about into over after "
         "beneath under above the and a that I it not he as you this but his they her she or an will "
         "my one all would there their what so out if who which go me when make can like no just him "
         "river model data embed train merge vector query passage search index token layer weight").split()


def task_sizes(rows: int) -> list[int]:
    weights = 1.0 / np.arange(1, N_TASKS + 1) ** 1.1
    sizes = np.floor(weights / weights.sum() * rows).astype(int)
    sizes[0] += rows - sizes.sum()
    return sizes.tolist()


def make_corpus(path: Path, rows: int, seed: int = 0) -> Path:
    """Deterministic synthetic corpus; reused when already there."""
    done = path / ".complete"
    if done.exists():
        return path
    rng = np.random.default_rng(seed)
    # One long random text; every passage is a slice at a random offset, so rows are distinct
    # text that compresses like prose rather than like repeated strings.
    vocab = np.array(WORDS)
    stream = " ".join(vocab[rng.integers(0, len(vocab), 12_000_000)].tolist())
    limit = len(stream) - 1000
    path.mkdir(parents=True, exist_ok=True)
    for t, n in enumerate(task_sizes(rows)):
        starts = rng.integers(0, limit, size=(n, 9))
        doc_len = rng.integers(300, 420, size=(n, 8))
        q_len = rng.integers(55, 85, size=n)
        kind = "symmetric_sts" if t % 5 == 1 else ("symmetric_class" if t % 5 == 3 else "retrieval")
        with open(path / f"task{t:02d}.jsonl", "w") as f:
            for i in range(n):
                s = starts[i]
                q = stream[s[0]:s[0] + q_len[i]]
                docs = [stream[s[j + 1]:s[j + 1] + doc_len[i, j]] for j in range(8)]
                f.write(json.dumps({"query": q, "pos": docs[:1], "neg": docs[1:], "type": kind}) + "\n")
    done.touch()
    return path


def floor(corpus: Path, out: Path) -> None:
    """Read with pyarrow, write 3x the bytes as Parquet: the least any bagger has to do."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(corpus.glob("*.jsonl")):
        table = pajson.read_json(file)
        for ratio in (0.2, 0.4, 0.6, 0.8, 1.0):
            pq.write_table(table.slice(0, int(ratio * table.num_rows)), out / f"{file.stem}-{ratio}.parquet",
                           compression="snappy")
        del table


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of the whole process tree, Ray daemons included."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [parent, *parent.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return wall, peak


def run_size(rows: int, repeats: int) -> dict:
    corpus = make_corpus(OUT / f"corpus-{rows}", rows)
    corpus_bytes = sum(f.stat().st_size for f in corpus.glob("*.jsonl"))
    config = OUT / f"run-{rows}.yaml"
    work = OUT / f"work-{rows}"
    config.write_text(f"workdir: {work}\ncorpus:\n  path: {corpus}\nray:\n  num_cpus: 2\n")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    results = {"floor": [], "boom": []}
    for i in range(repeats):
        for name in ("floor", "boom"):
            subprocess.run(["rm", "-rf", str(work), str(OUT / "floor-out")], check=True)
            if name == "floor":
                cmd = [sys.executable, __file__, "--floor-only", str(corpus), str(OUT / "floor-out")]
            else:
                cmd = [str(Path(sys.executable).parent / "boom"), "bag", "--config", str(config)]
            wall, peak = measure(cmd, env)
            results[name].append({"wall_s": wall, "peak_rss_bytes": peak})
            print(f"  rows={rows} run {i + 1}/{repeats} {name}: {wall:.1f}s, peak RSS {peak / 2**20:.0f} MiB",
                  flush=True)
    written = sum(f.stat().st_size for f in work.rglob("*.parquet"))
    subprocess.run(["rm", "-rf", str(work), str(OUT / "floor-out")], check=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "peak_rss_bytes")}
           for k, v in results.items()}
    return {"rows": rows, "corpus_bytes": corpus_bytes, "bag_parquet_bytes": written, "runs": results,
            "median": med, "wall_ratio": med["boom"]["wall_s"] / med["floor"]["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[700_000, 2_800_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floor-only", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_only:
        floor(Path(args.floor_only[0]), Path(args.floor_only[1]))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    report = [run_size(rows, args.repeats) for rows in args.rows]
    (OUT / "results.json").write_text(json.dumps(report, indent=2))
    print("\n| rows | corpus | floor wall | boom wall | ratio | floor peak RSS | boom peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in report:
        m = r["median"]
        print(f"| {r['rows']:,} | {r['corpus_bytes'] / 1e9:.2f} GB | {m['floor']['wall_s']:.1f} s | "
              f"{m['boom']['wall_s']:.1f} s | {r['wall_ratio']:.2f}x | "
              f"{m['floor']['peak_rss_bytes'] / 2**20:.0f} MiB | {m['boom']['peak_rss_bytes'] / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
