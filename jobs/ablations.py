"""The paper's ablation grid (one pipeline per cell), as a Ray job:

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/ablations.py --grid jobs/configs/paper-ablations.yaml [--cells boom per_task]

It takes the same flags as `boom ablations` and runs the same code, in the cluster the job runs in.
"""

from __future__ import annotations

import sys

from _job import run


def main(argv: list[str] | None = None) -> int:
    return run("ablations", argv)


if __name__ == "__main__":
    sys.exit(main())
