"""Ray Tune over merge weights (`boom sweep`): space.py says what is searched, inputs.py what every
trial shares (tensors and statistics, once), trial.py what one trial does (an in-memory merge
scored by a resident embedder), run.py the driver (run_sweep)."""

from boom_ray.sweep.run import run_sweep
from boom_ray.sweep.space import BEST, SWEEP_JSON, SweepError, search_space, searcher

__all__ = ["BEST", "SWEEP_JSON", "SweepError", "run_sweep", "search_space", "searcher"]
