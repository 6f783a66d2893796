"""The timing harness of benchmarks/merge.py: one model set, the I/O floor, `boom merge` and
mergekit-yaml, each measurement started from the same machine state.

What moved the figures between invocations, and what the harness does about each:
- Page cache: mergekit's peak (20 GB on the big set) evicts the inputs, so whoever ran next
  read from disk. Every measurement first reads all inputs once (untimed), so all start warm.
- Fresh output pages: a tool's output lands in page-cache pages that are new to it. The variant's
  old output is removed and `sync`ed before every measurement, for every variant alike.
- The host reclaiming memory: this VM reports freed guest memory to the host (virtio-balloon
  free page reporting, `/sys/module/page_reporting`), and touching a reported page again costs a
  host fault, so writing 1.6 GB into fresh pages took 0.4 to 5.4 s depending on how long the
  memory had been free. Before every measurement the harness waits until the reporting counter
  stops moving (`settle`): every variant then starts with its free memory returned to the host,
  the same (worst, but steady) state, rather than whatever the previous variant left.
- Threads: the floor uses as many threads as `boom merge` (given to both explicitly).
- Order: the variants' order rotates from run to run, so no variant always runs after the same
  other; medians of the runs and their spread are reported. One untimed round of floor and
  boom-ray comes first (right after a set was generated, the first round ran 2-3x slower).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")


def input_files(models: list[Path]) -> list[Path]:
    return [f for d in models for f in sorted(d.glob("*.safetensors"))]


def warm_page_cache(models: list[Path]) -> None:
    """Read every input file once (untimed), so each measurement starts with the inputs cached."""
    buf = bytearray(64 << 20)
    for f in input_files(models):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def reported_kib() -> int | None:
    try:
        return int(REPORTED.read_text())
    except (OSError, ValueError):
        return None


def settle(quiet_s: float = 2.0, timeout_s: float = 30.0) -> float:
    """`sync`, then wait until the host has been handed the free memory (the free page reporting
    counter unchanged for `quiet_s`; at most `timeout_s`, for boxes where neighbours keep freeing).
    Returns the seconds waited. Without page reporting: sync and one quiet second."""
    t0 = time.perf_counter()
    os.sync()
    last = reported_kib()
    if last is None:
        time.sleep(1.0)
        return time.perf_counter() - t0
    still = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(0.25)
        now = reported_kib()
        if now != last:
            last, still = now, time.perf_counter()
        elif time.perf_counter() - still >= quiet_s:
            break
    return time.perf_counter() - t0


def available_gib() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and peak RSS (MiB, /usr/bin/time -v) of one subprocess, process start included."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"wall_s": wall, "rss_mib": rss_kb / 1024}


def spread(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0}


def run_set(name: str, models: list[Path], out_bytes: int, yaml_path: Path, work: Path, *, runs: int,
            mergekit_runs: int, mergekit: Path | None, boom: list[str], threads: int, budget: str,
            mergekit_gib: float) -> dict:
    """`runs` rounds of floor and boom-ray (and mergekit in the first `mergekit_runs`), each
    measurement from the protocol state (inputs warm, no output, synced, memory settled)."""
    outs = {"floor": work / f"{name}-floor.bin", "boom": work / f"{name}-out-boom", "mergekit": work / f"{name}-out-mk"}
    cmds = {
        "floor": [sys.executable, str(HERE / "merge_floor.py"), "--threads", str(threads), "--out", str(outs["floor"]),
                  "--out-bytes", str(out_bytes), *map(str, input_files(models))],
        "boom": [*boom, str(yaml_path), "--out", str(outs["boom"]), "--force", "--set", f"memory_budget={budget}",
                 "--set", f"threads={threads}"],
        "mergekit": [str(mergekit), str(yaml_path), str(outs["mergekit"]), "--quiet"] if mergekit else [],
    }
    rows: dict[str, list[dict]] = {"floor": [], "boom": [], "mergekit": []}
    for v in ("floor", "boom"):  # one untimed round: the first run after generating a set was 2-3x slow
        warm_page_cache(models)
        settle()
        timed(cmds[v])
    for r in range(runs):
        variants = ["floor", "boom"] + (["mergekit"] if mergekit and r < mergekit_runs else [])
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            p = outs[v]  # no previous output (other tools' last outputs stay, for the comparison of values)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if v == "mergekit" and available_gib() < mergekit_gib:
                print(f"{name} run {r + 1}: mergekit skipped, only {available_gib():.1f} GiB available", flush=True)
                continue
            warm_page_cache(models)
            waited = settle()
            row = timed(cmds[v])
            row.update(run=r + 1, settle_s=round(waited, 2), load=os.getloadavg()[0])
            rows[v].append(row)
            print(f"{name} run {r + 1}: {v} {row['wall_s']:.2f} s, {row['rss_mib']:.0f} MiB "
                  f"(settled {waited:.1f} s, load {row['load']:.1f})", flush=True)
    walls = {v: spread([x["wall_s"] for x in rs]) for v, rs in rows.items() if rs}
    rss = {v: statistics.median(x["rss_mib"] for x in rs) for v, rs in rows.items() if rs}
    res = {"set": name, "runs": {v: len(rs) for v, rs in rows.items()}, "wall_s": walls, "rss_mib": rss,
           "all": rows, "threads": threads, "memory_budget": budget, "output_bytes": out_bytes,
           "input_bytes": sum(f.stat().st_size for f in input_files(models)),
           "boom_over_floor": walls["boom"]["median"] / walls["floor"]["median"],
           "boom_over_floor_per_run": [b["wall_s"] / f["wall_s"] for b, f in zip(rows["boom"], rows["floor"])]}
    if "mergekit" in walls:
        res["mergekit_over_boom"] = walls["mergekit"]["median"] / walls["boom"]["median"]
        res["rss_ratio_vs_mergekit"] = rss["boom"] / rss["mergekit"]
    return res


def agreement(now: dict, before: dict | None) -> dict | None:
    """Each variant's median now over the previous invocation's (same set): the rerun check
    (target: within 15 %)."""
    if not before:
        return None
    out = {v: now["wall_s"][v]["median"] / before["wall_s"][v]["median"] for v in now["wall_s"] if v in before["wall_s"]}
    out["boom_over_floor"] = now["boom_over_floor"] / before["boom_over_floor"]
    return out


def markdown(res: dict, agree: dict | None) -> str:
    lines = [f"**{res['set']}**, {res.get('method', 'multislerp')} ({res['input_bytes'] / 1e9:.2f} GB in, {res['output_bytes'] / 1e9:.2f} GB out, "
             f"{res['threads']} threads, memory_budget {res['memory_budget']})", "",
             "| | median wall (s) | min - max (s) | spread | peak RSS (MiB) | runs |", "|---|---|---|---|---|---|"]
    label = {"floor": "I/O floor (mmap, same threads)", "boom": "boom-ray (`boom merge`)",
             "mergekit": "mergekit 0.1.5 (`mergekit-yaml`)"}
    for v, w in res["wall_s"].items():
        runs = ", ".join(f"{x['wall_s']:.2f}" for x in res["all"][v])
        lines.append(f"| {label[v]} | {w['median']:.2f} | {w['min']:.2f} - {w['max']:.2f} | {100 * w['spread']:.0f} % "
                     f"| {res['rss_mib'][v]:.0f} | {runs} |")
    lines += ["", f"- boom / floor: {res['boom_over_floor']:.2f}x (medians); per run "
              + ", ".join(f"{x:.2f}" for x in res["boom_over_floor_per_run"])]
    if "mergekit_over_boom" in res:
        lines.append(f"- mergekit / boom: {res['mergekit_over_boom']:.1f}x (medians); peak RSS 1/"
                     f"{1 / res['rss_ratio_vs_mergekit']:.0f}")
    if agree:
        lines.append("- this invocation / the previous one (medians): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in agree.items()))
    return "\n".join(lines)
