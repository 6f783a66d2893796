"""`python -m boom_ray.cli ...` is `boom ...`."""

from boom_ray.cli import entry

entry()
