"""Tiny random safetensors models for the merge tests, written directly (no framework needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

SHAPES = {"embed.weight": (64, 24), "layer.0.proj.weight": (24, 24), "layer.0.norm.weight": (24,),
          "layer.1.proj.weight": (48, 24), "head.bias": (7,)}


def make_model(path: Path, seed: int, *, shapes: dict | None = None, dtype=torch.float32,
               extra: dict | None = None, shard_names: list[list[str]] | None = None) -> Path:
    """A model directory: random tensors (+ `extra` tensors as given), config, tokenizer and
    sentence-transformers files; sharded with an index when `shard_names` groups the tensors."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(s, generator=gen).to(dtype) for n, s in (shapes or SHAPES).items()}
    tensors.update(extra or {})
    path.mkdir(parents=True, exist_ok=True)
    if shard_names:
        weight_map = {}
        for i, names in enumerate(shard_names):
            fname = f"model-{i + 1:05d}-of-{len(shard_names):05d}.safetensors"
            save_file({n: tensors[n] for n in names}, str(path / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in names})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "toy", "torch_dtype": "float32", "seed": seed}))
    (path / "tokenizer.json").write_text(json.dumps({"seed": seed}))
    (path / "modules.json").write_text("[]")
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True}))
    return path


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    """Four tiny float32 models (the fourth serves as a base), one of them sharded."""
    out = [make_model(tmp_path / f"m{i}", i) for i in range(3)]
    out.append(make_model(tmp_path / "base", 99, shard_names=[["embed.weight", "head.bias"],
                                                              ["layer.0.proj.weight", "layer.0.norm.weight",
                                                               "layer.1.proj.weight"]]))
    return out
