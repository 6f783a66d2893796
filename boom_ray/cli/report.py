"""`boom report --config RUN.yaml`: report.md + report.png, every model of the run on every suite."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_config_arguments, add_verbose_argument, config_from_args

HELP = "write report.md and an ID-vs-OOD chart for every model of a run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_verbose_argument(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.errors import BoomError
    from boom_ray.eval.report import write_report
    from boom_ray.runtime.ray_session import init_ray
    from boom_ray.runtime.storage import exists, join, resolve

    cfg = config_from_args(args)
    fs, root = resolve(cfg.workdir)
    if not exists(fs, root):
        raise BoomError(f"{cfg.workdir}: work directory not found")
    init_ray(cfg.ray)
    from boom_ray.workflows.repeats import SUMMARY, read_summary, write_repeats_report

    recorded = exists(fs, join(root, SUMMARY))
    if cfg.repeats > 1 or recorded:  # the report over the repeats that `boom run --repeats N` recorded
        entries = read_summary(cfg)["repeats"]
        if cfg.repeats == 1:  # the config without its --repeats flag: the work dir says how many
            from boom_ray.config import derive

            cfg = derive(cfg, {"repeats": len(entries)}, f"{cfg.workdir}/{SUMMARY}")
        out = write_repeats_report(cfg, entries)
    else:
        out = write_report(cfg)
    print(out["markdown"])
    print(f"report written to {out['report_md']} and {out['report_png']}")
    return 0
