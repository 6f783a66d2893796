"""Merges of sentence-transformers models whose modules carry weights (a Dense projection head):
every weighted module is merged like the top-level weights, checked against an independent
float64 reference, and the merge loads in SentenceTransformer with the reference embeddings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from boom_ray.cli import main as boom
from boom_ray.merge.io import CheckpointError
from boom_ray.merge.modules import ModuleLayoutError, weighted_modules
from boom_ray.merge.request import MANIFEST, MergeRequest, ModelInput, fingerprint
from boom_ray.merge.task import merge

from .conftest import make_model

DENSE = "3_Dense"  # MiniLM's modules are 0 (transformer), 1_Pooling and 2_Normalize; the head comes next
SENTENCES = ["a cat sat on the mat", "stock markets fell sharply today", "how to cook tomato soup"]
WEIGHTS = [0.2, 0.5, 1.0]


@pytest.fixture(scope="module")
def dense_models(minilm_path, tmp_path_factory) -> list[Path]:
    """The bundled MiniLM plus a 384 -> 128 Dense head, three copies perturbed with fixed seeds;
    the third stores its head as pytorch_model.bin (as older sentence-transformers did)."""
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.base.modules import Dense  # sentence-transformers 6
    except ImportError:
        from sentence_transformers.models import Dense  # sentence-transformers 5

    root = tmp_path_factory.mktemp("dense_models")
    torch.manual_seed(0)
    model = SentenceTransformer(str(minilm_path), device="cpu")
    model.append(Dense(384, 128))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        model.load_state_dict({k: v + 0.02 * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen)
                               if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()})
        model.save(str(root / f"m{seed}"), create_model_card=False)
        out.append(root / f"m{seed}")
    head = out[2] / DENSE
    torch.save(load_file(str(head / "model.safetensors")), head / "pytorch_model.bin")
    (head / "model.safetensors").unlink()
    return out


def _module_weights(model: Path, module: str) -> dict[str, torch.Tensor]:
    folder = model / module if module else model
    if (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").is_file():
        return torch.load(folder / "pytorch_model.bin", weights_only=True, map_location="cpu")
    return load_file(str(folder / "model.safetensors"))


def _reference(method: str, xs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """mergekit's formulas (DESIGN.md) in float64 torch, written apart from boom_ray.merge."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    flat = [x.double().reshape(-1) for x in xs]
    if method == "linear":
        return sum(wi * x for wi, x in zip(w, flat)).reshape(xs[0].shape)
    norms = [x.norm() for x in flat]
    units = [x / (n + 1e-8) for x, n in zip(flat, norms)]
    m = sum(wi * u for wi, u in zip(w, units))
    if m.norm() == 0:  # all zero (MiniLM's pooler bias): zero, as mergekit's eps keeps it
        return torch.zeros(xs[0].shape, dtype=torch.float64)
    m = m / m.norm()
    t = sum(wi * (u - (u @ m) * m) for wi, u in zip(w, units))
    tn = t.norm()
    direction = m * torch.cos(tn) + (t * torch.sin(tn) / tn if tn > 1e-12 else 0.0)
    return (direction * sum(wi * n for wi, n in zip(w, norms))).reshape(xs[0].shape)


def _mergekit_yaml(path: Path, method: str, models: list[Path]) -> Path:
    path.write_text(yaml.safe_dump({"merge_method": method, "dtype": "float32", "models": [
        {"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, WEIGHTS)]}))
    return path


@pytest.mark.parametrize("method", ["multislerp", "linear"])
def test_dense_head_is_merged_and_loads(dense_models, tmp_path, method):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "merged"
    assert boom(["merge", str(_mergekit_yaml(tmp_path / "merge.yaml", method, dense_models)), "--out", str(out)]) == 0
    reference = tmp_path / "reference"
    shutil.copytree(dense_models[0], reference, ignore=shutil.ignore_patterns("*.safetensors"))
    for module in ("", DENSE):
        inputs = [_module_weights(m, module) for m in dense_models]
        got = load_file(str((out / module if module else out) / "model.safetensors"))
        assert got.keys() == inputs[0].keys()
        want = {}
        for name, x in inputs[0].items():
            want[name] = _reference(method, [i[name] for i in inputs], WEIGHTS) if x.is_floating_point() else x
            err = (got[name].double() - want[name].double()).norm() / want[name].double().norm().clamp_min(1e-12)
            assert err < 1e-6, f"{module or 'top level'}: {name}: relative error {err:.2e}"
        save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in want.items()},
                  str((reference / module if module else reference) / "model.safetensors"), metadata={"format": "pt"})
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["output"]["modules"] == [DENSE]
    assert not (out / DENSE / "pytorch_model.bin").exists() and (out / DENSE / "config.json").is_file()
    merged = SentenceTransformer(str(out), device="cpu").encode(SENTENCES)
    expected = SentenceTransformer(str(reference), device="cpu").encode(SENTENCES)
    assert merged.shape == (3, 128)
    np.testing.assert_allclose(merged, expected, atol=1e-5)


def _add_module(model: Path, module: str, tensors: dict[str, torch.Tensor], as_bin: bool = False) -> Path:
    """A sentence-transformers module folder with weights, listed in modules.json."""
    folder = model / module
    folder.mkdir(parents=True, exist_ok=True)
    if as_bin:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"in_features": 24, "out_features": 8}))
    listed = json.loads((model / "modules.json").read_text())
    listed.append({"idx": len(listed), "name": str(len(listed)), "path": module, "type": "x.Dense"})
    (model / "modules.json").write_text(json.dumps(listed))
    return model


def _head(seed: int, rows: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"linear.weight": torch.randn(rows, 24, generator=gen), "linear.bias": torch.randn(rows, generator=gen)}


def _request(models: list[Path], method: str = "linear") -> MergeRequest:
    return MergeRequest(method, [ModelInput(str(m), {"weight": 1.0}) for m in models])


def test_tiny_modules_merge_as_the_top_level_does(tmp_path):
    models = [_add_module(make_model(tmp_path / f"m{i}", i), "2_Dense", _head(i), as_bin=i == 1) for i in range(2)]
    assert weighted_modules(str(models[0])) == {"2_Dense": "model.safetensors"}
    assert weighted_modules(str(models[1])) == {"2_Dense": "pytorch_model.bin"}
    manifest = merge(_request(models), str(tmp_path / "out"), progress=False)
    got = load_file(str(tmp_path / "out" / "2_Dense" / "model.safetensors"))
    for name, x in _head(0).items():
        assert torch.allclose(got[name], (x + _head(1)[name]) / 2, atol=1e-6)
    assert manifest["output"]["tensors"] == 5 + 2
    before = fingerprint(str(models[0]))
    save_file(_head(7), str(models[0] / "2_Dense" / "model.safetensors"))
    assert fingerprint(str(models[0])) != before  # a retrained head is a changed model


def test_mismatched_module_layouts_are_refused_naming_the_module(tmp_path, capsys):
    a = _add_module(make_model(tmp_path / "a", 0), "2_Dense", _head(0))
    b = make_model(tmp_path / "b", 1)
    with pytest.raises(ModuleLayoutError, match=r"module '2_Dense' has weights in .*a but not in .*b"):
        merge(_request([a, b]), str(tmp_path / "out"), progress=False)
    _add_module(b, "2_Dense", _head(1, rows=4))
    config = _mergekit_yaml(tmp_path / "merge.yaml", "multislerp", [a, b])
    assert boom(["merge", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "module '2_Dense'" in err and "'linear.bias' has shape [4]" in err
    assert not (tmp_path / "out").exists()


def test_pytorch_model_bin_is_read_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    a = _add_module(make_model(tmp_path / "a", 0), "2_Dense", _head(0))
    b = _add_module(make_model(tmp_path / "b", 1), "2_Dense", _head(1), as_bin=True)
    torch.save({"linear.weight": Payload()}, b / "2_Dense" / "pytorch_model.bin")  # unpickling it would mkdir
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: cannot read it as weights only") as info:
        merge(_request([a, b]), str(tmp_path / "out"), progress=False)
    assert "module '2_Dense'" in str(info.value) and not marker.exists()
