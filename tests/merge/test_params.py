"""Per-layer gradients and `filter:` entries, resolved per tensor as mergekit 0.1.5 does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from boom_ray.cli import main as boom
from boom_ray.config import MergeConfig
from boom_ray.merge.methods import base as method_base
from boom_ray.merge.methods import MergeMethodError, get_method, merge_tensors
from boom_ray.merge.methods.params import evaluate, layer_positions
from boom_ray.merge.request import MergeRequest, ModelInput, from_mergekit
from boom_ray.merge.task import merge

from .conftest import load_dir


@pytest.mark.parametrize("setting,t,want", [
    (0.5, 0.7, 0.5),
    ([0.0, 1.0], 0.25, 0.25),
    ([0.0, 1.0, 0.0], 0.75, 0.5),  # j + f = 1.5: halfway between v_1 and v_2
    ([0.2, 0.4, 0.8], 1.0, 0.8),
    ([1.0], 0.3, 1.0),
    ([True, False], 0.4, True),  # not numeric: picks v_int(t (n - 1))
    ([{"filter": "mlp", "value": 2.0}, {"value": 3.0}], 0.0, 3.0),
    ([{"filter": "attn", "value": [0.0, 1.0]}, {"value": 3.0}], 0.5, 0.5),
    ([{"filter": "*", "value": 4.0}], 0.0, 4.0),
    ({"filter": "attn", "value": 5.0}, 0.0, 5.0),
    ([{"filter": "mlp", "value": 2.0}], 0.0, None),
])
def test_evaluate_like_mergekit(setting, t, want):
    got = evaluate(setting, "model.layers.1.self_attn.q_proj.weight", t)
    assert got is None if want is None else got == pytest.approx(want)


def test_layer_positions():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.weight", "model.layers.2.mlp.weight",
             "model.layers.1.norm.weight", "model.norm.weight", "encoder.layer.1.x"]
    pos = layer_positions(names)
    assert pos == {"model.embed_tokens.weight": 0.0, "model.layers.0.mlp.weight": 0.0,
                   "model.layers.2.mlp.weight": 1.0, "model.layers.1.norm.weight": 0.5,
                   "model.norm.weight": 0.0, "encoder.layer.1.x": 0.5}
    assert layer_positions(["h.0.w", "wte"]) == {"h.0.w": 1.0, "wte": 0.0}


def test_model_setting_falls_back_to_top_level_then_default():
    method = get_method("ties")
    settings = method.validate(2, True, {"density": 0.3, "lambda": [{"filter": "mlp", "value": 0.5}]},
                               [{"weight": 1.0, "density": [{"filter": "attn", "value": 0.9}]},
                                {"weight": [0.0, 1.0]}])
    params, mps = method.resolve(settings, "layers.1.attn.w", 0.25)
    assert params["lambda"] == 1.0 and mps[0]["density"] == 0.9 and mps[1] == {"weight": 0.25, "density": 0.3}
    params, mps = method.resolve(settings, "layers.1.mlp.w", 1.0)
    assert params["lambda"] == 0.5 and mps[0]["density"] == 0.3 and mps[1]["weight"] == 1.0


def test_setting_errors():
    method = get_method("linear")
    with pytest.raises(MergeMethodError, match="model 0: parameter 'weight'.*all numbers"):
        method.validate(1, False, {}, [{"weight": [1.0, {"value": 2}]}])
    with pytest.raises(MergeMethodError, match="'normalize'.*non-empty list"):
        method.validate(1, False, {"normalize": []}, [{"weight": 1.0}])
    settings = method.validate(1, False, {}, [{"weight": [{"filter": "mlp", "value": 1.0}]}])
    with pytest.raises(MergeMethodError, match="model 0 has no 'weight' for tensor 'attn.w'"):
        method.resolve(settings, "attn.w", 0.0)


def test_in_memory_merge_resolves_for_the_tensor():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(10, generator=g) for _ in range(2)]
    mps = [{"weight": [1.0, 0.0]}, {"weight": [{"filter": "norm", "value": 3.0}, {"value": [0.0, 1.0]}]}]
    got = merge_tensors("linear", xs, None, None, {"normalize": False}, mps, tensor_name="layers.0.mlp", t=0.5)
    assert torch.allclose(torch.from_numpy(got), 0.5 * xs[0] + 0.5 * xs[1])
    got = merge_tensors("linear", xs, None, None, {"normalize": False}, mps, tensor_name="layers.0.norm", t=0.5)
    assert torch.allclose(torch.from_numpy(got), 0.5 * xs[0] + 3.0 * xs[1])


def test_streamed_merge_with_gradients_and_filters(models, tmp_path: Path):
    """conftest's models have layer.0 and layer.1: t = 0 and 1; embed and head are outside (t = 0)."""
    cfg = {"merge_method": "task_arithmetic", "base_model": str(models[3]),
           "parameters": {"lambda": [{"filter": "norm", "value": 0.5}, {"value": [1.0, 2.0]}]},
           "models": [{"model": str(models[0]), "parameters": {"weight": [0.2, 0.6]}},
                      {"model": str(models[1]), "parameters": {"weight": 0.3}}]}
    req = from_mergekit(cfg)
    assert isinstance(req, MergeRequest) and req.models[0] == ModelInput(str(models[0]), {"weight": [0.2, 0.6]})
    merge(req, str(tmp_path / "out"), MergeConfig(memory_budget=40_000), progress=False)
    out = load_dir(tmp_path / "out")
    ins = [load_dir(m) for m in models]
    expect = {"embed.weight": (0.2, 1.0), "head.bias": (0.2, 1.0), "layer.0.proj.weight": (0.2, 1.0),
              "layer.0.norm.weight": (0.2, 0.5), "layer.1.proj.weight": (0.6, 2.0)}
    for name, (w0, lam) in expect.items():
        b = ins[3][name]
        ref = b + lam * (w0 * (ins[0][name] - b) + 0.3 * (ins[1][name] - b))
        assert torch.allclose(out[name], ref, atol=1e-5), name


def test_parameters_a_method_does_not_define_are_ignored_with_one_warning(monkeypatch, caplog):
    """mergekit reads only the parameters a method defines: a typo or another method's parameter
    is a warning line naming it and the method, and the result is the merge without it."""
    monkeypatch.setattr(method_base, "_WARNED", set())
    g = torch.Generator().manual_seed(0)
    xs, base = [torch.randn(10, generator=g) for _ in range(2)], torch.randn(10, generator=g)
    with caplog.at_level(logging.WARNING):
        got = merge_tensors("task_arithmetic", xs, [1, 1], base, {"lamda": 0.5})
        merge_tensors("task_arithmetic", xs, [1, 1], base, {"lamda": 0.5})  # said once per process
    assert (got == merge_tensors("task_arithmetic", xs, [1, 1], base)).all()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "task_arithmetic: ignoring parameter 'lamda' (top level)" in lines[0]


def test_cli_runs_what_mergekit_runs_despite_unused_parameters(models, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(method_base, "_WARNED", set())
    cfg = {"merge_method": "model_stock", "base_model": str(models[3]),
           "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": 0.5}} for m in models[:3]]}
    path = tmp_path / "model_stock.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.WARNING):
        assert boom(["merge", str(path), "--out", str(tmp_path / "out")]) == 0
    lines = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert lines == ["model_stock: ignoring parameter 'density' (models 0, 1, 2), which model_stock does not use "
                     "(mergekit ignores it too; model_stock takes: filter_wise, weight)"]
    assert load_dir(tmp_path / "out").keys() == load_dir(models[0]).keys()
