"""Incremental update: train on new data plus a sample of the old, merge into the current model.

Submit it to a running cluster (the upload honours .gitignore, so .venv and outputs stay home):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/update.py --config jobs/configs/update.yaml

It takes the same flags as `boom update` and runs the same code, in the cluster the job runs in.
"""

from __future__ import annotations

import sys

from _job import run


def main(argv: list[str] | None = None) -> int:
    return run("update", argv)


if __name__ == "__main__":
    sys.exit(main())
