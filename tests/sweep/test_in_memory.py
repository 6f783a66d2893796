"""A trial's in-memory merge is the model the sweep writes: the streaming merge of the winner,
given the sweep's cached statistics, is bit for bit the trial's merge, however it is chunked."""

from __future__ import annotations

import numpy as np
import pytest

from boom_ray.config import MergeConfig
from boom_ray.merge.in_memory import load_model_tensors, merge_in_memory, sweep_statistics
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import MergeRequest, ModelInput
from boom_ray.merge.task import merge

from tests.merge.conftest import load_dir


@pytest.mark.parametrize("method_name, weights", [("multislerp", [0.3, 0.9]), ("linear", [0.2, 1.0]),
                                                  ("multislerp", [1.0, 0.05])])
def test_trial_merge_equals_written_best(bag_models, tmp_path, method_name, weights):
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    method = get_method(method_name)
    model_params = [{"weight": w} for w in weights]
    params, model_params = method.validate(2, False, {}, model_params)
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, tensors, None, params, [{"weight": 1.0}, {"weight": 1.0}])
    assert bool(stats) == (method_name == "multislerp")
    in_memory = merge_in_memory(method, tensors, None, params, model_params, stats)

    request = MergeRequest(method_name, [ModelInput(p, {"weight": w}) for p, w in zip(paths, weights)])
    # a budget far below the largest tensor: the written model is merged in many windows
    out = tmp_path / "best"
    merge(request, str(out), MergeConfig(memory_budget="1MB", threads=2), progress=False, statistics=stats)
    written = load_dir(out)
    assert set(written) == set(in_memory)
    for name, tensor in written.items():
        expected = in_memory[name]
        assert tensor.numpy().shape == expected.shape, name
        assert np.array_equal(tensor.numpy(), expected), f"{name}: max abs difference " \
            f"{np.abs(tensor.numpy() - expected).max()}"


def test_cached_statistics_match_a_fresh_merge(bag_models, tmp_path):
    """The statistics a sweep caches are those of the inputs: a merge that computes its own gives
    the same model up to float summation order."""
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    request = MergeRequest("multislerp", [ModelInput(p, {"weight": w}) for p, w in zip(paths, [0.4, 0.6])])
    method = get_method("multislerp")
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, tensors, None, {"normalize_weights": True, "eps": 1e-8},
                             [{"weight": 1.0}, {"weight": 1.0}])
    merge(request, str(tmp_path / "cached"), MergeConfig(memory_budget="1MB"), progress=False, statistics=stats)
    merge(request, str(tmp_path / "fresh"), MergeConfig(memory_budget="1MB"), progress=False)
    a, b = load_dir(tmp_path / "cached"), load_dir(tmp_path / "fresh")
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
