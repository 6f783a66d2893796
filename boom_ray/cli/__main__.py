"""`python -m boom_ray.cli ...` is `boom ...`."""

import sys

from boom_ray.cli import main

sys.exit(main())
