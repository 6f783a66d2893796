"""A trial's in-memory merge is the model the sweep writes: the streaming merge of the winner,
given the sweep's cached statistics, is bit for bit the trial's merge, however it is chunked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import boom_ray.merge.in_memory as in_memory
from boom_ray.config import MergeConfig
from boom_ray.merge.in_memory import load_model_tensors, merge_in_memory, sweep_statistics
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import MergeRequest, ModelInput
from boom_ray.merge.task import merge
from boom_ray.sweep.trial import load_weights, parameter_targets

from tests.merge.conftest import load_dir


BAGS = {"float32": "bag_models", "bfloat16": "bf16_bag_models"}
"""Stored dtype of the bags -> their fixture (bfloat16 multislerp and linear take the fused kernels)."""


@pytest.mark.parametrize("stored", list(BAGS))
@pytest.mark.parametrize("method_name, weights", [("multislerp", [0.3, 0.9]), ("linear", [0.2, 1.0]),
                                                  ("multislerp", [1.0, 0.05])])
def test_trial_merge_equals_written_best(request, tmp_path, method_name, weights, stored):
    bag_models = request.getfixturevalue(BAGS[stored])
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    method = get_method(method_name)
    settings = method.validate(2, False, {}, [{"weight": w} for w in weights])
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, method.validate(2, False, {}, [{"weight": 1.0}, {"weight": 1.0}]), tensors, None)
    assert bool(stats) == (method_name == "multislerp")
    trial = merge_in_memory(method, settings, tensors, None, stats)

    request = MergeRequest(method_name, [ModelInput(p, {"weight": w}) for p, w in zip(paths, weights)])
    # a budget far below the largest tensor: the written model is merged in many windows
    out = tmp_path / "best"
    merge(request, str(out), MergeConfig(memory_budget="1MB", threads=2), progress=False, statistics=stats)
    written = load_dir(out)
    assert set(written) == set(trial)
    for name, tensor in written.items():
        expected = torch.from_numpy(trial[name]).to(tensor.dtype)  # the writer's rounding (bf16 bags)
        assert tensor.shape == expected.shape, name
        assert torch.equal(tensor, expected), f"{name}: max abs difference {(tensor - expected).abs().max()}"


def test_cached_statistics_match_a_fresh_merge(bag_models, tmp_path):
    """The statistics a sweep caches are those of the inputs: a merge that computes its own gives
    the same model up to float summation order."""
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    request = MergeRequest("multislerp", [ModelInput(p, {"weight": w}) for p, w in zip(paths, [0.4, 0.6])])
    method = get_method("multislerp")
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, method.validate(2, False, {}, [{"weight": 1.0}, {"weight": 1.0}]), tensors, None)
    merge(request, str(tmp_path / "cached"), MergeConfig(memory_budget="1MB"), progress=False, statistics=stats)
    merge(request, str(tmp_path / "fresh"), MergeConfig(memory_budget="1MB"), progress=False)
    a, b = load_dir(tmp_path / "cached"), load_dir(tmp_path / "fresh")
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("stored", list(BAGS))
@pytest.mark.parametrize("method_name, cached", [("multislerp", True), ("multislerp", False), ("linear", False)])
def test_threads_do_not_change_the_merge(request, monkeypatch, method_name, cached, stored):
    """Blocks are split between worker threads; the merged bytes do not depend on how many (and
    statistics computed per trial are summed in block order whatever the threads)."""
    bag_models = request.getfixturevalue(BAGS[stored])
    monkeypatch.setattr(in_memory, "BLOCK", 512)  # many blocks per tensor, so every thread gets some
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    method = get_method(method_name)
    settings = method.validate(2, False, {}, [{"weight": 0.7}, {"weight": 0.2}])
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, settings, tensors, None, threads=1) if cached else None
    ref = merge_in_memory(method, settings, tensors, None, stats, threads=1)
    assert max(t.size for t in ref.values()) > 4 * 512
    for threads in (2, 3, 5):
        got = merge_in_memory(method, settings, tensors, None, stats, threads=threads)
        for name, expected in ref.items():
            assert np.array_equal(got[name], expected), f"{threads} threads: {name}"
    if cached:
        for threads in (2, 3):
            again = sweep_statistics(method, settings, tensors, None, threads=threads)
            assert all(np.array_equal(a, b) for name in stats for a, b in zip(stats[name], again[name]))


@pytest.mark.parametrize("stored", list(BAGS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_resident_parameters_are_the_written_model(request, tmp_path, dtype, stored):
    """A trial stores each merged block straight into the resident embedder's parameters (float32,
    or bfloat16 bits rounded as the writer rounds them): they equal the written best model."""
    from boom_ray.model.embedder import Embedder  # lazy: transformers

    bag_models = request.getfixturevalue(BAGS[stored])
    paths = [str(bag_models / "models" / b) for b in ("bag50", "bag100")]
    weights = [0.3, 0.9]
    method = get_method("multislerp")
    settings = method.validate(2, False, {}, [{"weight": w} for w in weights])
    tensors = [load_model_tensors(p) for p in paths]
    stats = sweep_statistics(method, settings, tensors, None)
    embedder = Embedder.from_pretrained(paths[0], dtype=getattr(torch, dtype))
    merge_in_memory(method, settings, tensors, None, stats, sink=load_weights(embedder),
                    targets=parameter_targets(embedder), threads=2)

    request = MergeRequest("multislerp", [ModelInput(p, {"weight": w}) for p, w in zip(paths, weights)], dtype=dtype)
    merge(request, str(tmp_path / "best"), MergeConfig(memory_budget="1MB", threads=3), progress=False,
          statistics=stats)
    state = embedder.model.state_dict()
    written = load_dir(tmp_path / "best")
    for name, tensor in written.items():
        assert state[name].dtype == tensor.dtype, name
        assert torch.equal(state[name].float(), tensor.float()), name
