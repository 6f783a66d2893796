"""Demo recipe by experiment, the cheap axis: merge weights over the bags a `--repeats` run trained.

    .venv/bin/python benchmarks/demo_recipe.py --workdir runs/demo-repeats [--config jobs/configs/demo.yaml]

For every usable repeat of a `boom run --repeats N` work dir, each candidate merge below is built
from that repeat's bag models (`boom_ray.merge.stage.run_merges`, into
`<repeat>/merges/recipe-<name>/`, removed afterwards unless --keep) and scored, with bag100, on
the config's DEV suites, never the test suites the report shows: choosing a recipe on the test
suites would make its margin there optimistic. A candidate qualifies when its dev ID mean is no
more than 0.5 points below bag100's (mean over repeats); among those the one with the highest
dev OOD difference to bag100 is printed as the recipe to ship. Differences are paired (same
repeat, same dev items) with the report's intervals (`boom_ray.eval.stats`). Results go to
`benchmarks/_out/demo_recipe.json`. Retraining axes (bag ratios, steps, learning rate) cost a
whole `--repeats` run each and are not swept here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RATIOS = {"bag20": 0.2, "bag40": 0.4, "bag60": 0.6, "bag80": 0.8, "bag100": 1.0}
CANDIDATES = {  # name -> (method, weights per bag, parameters)
    "multislerp-ratio": ("multislerp", RATIOS, {}),  # the demo's default merge
    "multislerp-uniform": ("multislerp", {b: 1.0 for b in RATIOS}, {}),
    "multislerp-top3": ("multislerp", {"bag60": 0.6, "bag80": 0.8, "bag100": 1.0}, {}),
    "multislerp-square": ("multislerp", {b: r * r for b, r in RATIOS.items()}, {}),
    "karcher-uniform": ("karcher", {b: 1.0 for b in RATIOS}, {}),
}
ID_TOLERANCE = 0.005


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/demo-repeats")
    p.add_argument("--config", default="jobs/configs/demo.yaml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the candidate merges")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "_out" / "demo_recipe.json"))
    args = p.parse_args()

    from boom_ray.config import MergeSpec, derive, load_config
    from boom_ray.eval import stats
    from boom_ray.eval.evaluate import evaluate_model, load_suites
    from boom_ray.merge.stage import run_merges
    from boom_ray.runtime.ray_session import init_ray
    from boom_ray.workflows.repeats import repeat_configs

    base = load_config(args.config, {"workdir": args.workdir, "repeats": args.repeats})
    dev = load_suites(base.eval.dev_suites)
    init_ray(base.ray)
    runs, started = [], time.perf_counter()
    for rep in repeat_configs(base):
        models_dir = os.path.join(rep.cfg.workdir, "models")
        if not all(os.path.isfile(os.path.join(models_dir, b, "config.json")) for b in RATIOS):
            print(f"{rep.name}: bag models missing, left out")
            runs.append({"name": rep.name, "status": "failed", "error": "bag models missing", "models": {}})
            continue
        specs = [MergeSpec(name=f"recipe-{n}", method=m, weights=w, parameters=prm)
                 for n, (m, w, prm) in CANDIDATES.items()]
        cfg = derive(rep.cfg, {"merge.merges": [s.model_dump() for s in specs]}, f"recipes of {rep.name}")
        run_merges(cfg)
        scored = {"bag100": evaluate_model(os.path.join(models_dir, "bag100"), dev, cfg.eval)}
        for name in CANDIDATES:
            scored[name] = evaluate_model(os.path.join(cfg.workdir, "merges", f"recipe-{name}"), dev, cfg.eval)
            print(f"{rep.name} {name}: dev ID {scored[name]['id_mean']:.4f} OOD {scored[name]['ood_mean']:.4f} "
                  f"(bag100 {scored['bag100']['id_mean']:.4f} / {scored['bag100']['ood_mean']:.4f})", flush=True)
        runs.append({"name": rep.name, "status": "ok", "models": scored})
        if not args.keep:
            for name in CANDIDATES:
                shutil.rmtree(os.path.join(cfg.workdir, "merges", f"recipe-{name}"), ignore_errors=True)
    table, best = [], None
    for name in CANDIDATES:
        diff = stats.paired_difference(runs, name, "bag100")
        if diff is None:
            continue
        id_d, ood_d = diff["id_mean"], diff["ood_mean"]
        ok = id_d.mean >= -ID_TOLERANCE
        table.append({"candidate": name, "method": CANDIDATES[name][0], "weights": CANDIDATES[name][1],
                      "dev_id_diff": [id_d.mean, id_d.lo, id_d.hi], "dev_ood_diff": [ood_d.mean, ood_d.lo, ood_d.hi],
                      "repeats": id_d.repeats, "qualifies": ok, "line": stats.headline(name, "bag100", diff)})
        if ok and (best is None or ood_d.mean > best[1]):
            best = (name, ood_d.mean)
    print("\nDev suites, candidate minus bag100 in points, mean over repeats [95 % interval]:")
    for row in table:
        print(("  * " if best and row["candidate"] == best[0] else "    ") + row["line"]
              + ("" if row["qualifies"] else "  (ID loss > 0.5: disqualified)"))
    print(f"\nrecipe: {best[0] if best else 'none qualifies'} ({time.perf_counter() - started:.0f} s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"workdir": args.workdir, "best": best and best[0], "candidates": table,
                                          "failed": [r["name"] for r in runs if r["status"] != "ok"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
