"""The whole BOOM pipeline: bag, train every bag, merge, evaluate, report.

Submit it to a running cluster (the upload honours .gitignore, so .venv and outputs stay home):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/pipeline.py --config jobs/configs/demo.yaml [--from STAGE] [--repeats N]

It takes the same flags as `boom run` and runs the same code, in the cluster the job runs in.
"""

from __future__ import annotations

import sys

from _job import run


def main(argv: list[str] | None = None) -> int:
    return run("run", argv)


if __name__ == "__main__":
    sys.exit(main())
