"""Precision and reproducibility of training (CPU).

- fp32 training from a checkpoint stored in bf16 keeps fp32 parameters, and one small step
  changes them (in bf16 an AdamW step of 1e-5 on weights of ~0.02 is below half an ulp and
  vanishes: what precision fp32 did before the load dtype was pinned).
- the smoke config trained twice gives bit-identical weights (MiniLM has dropout 0.1, so this
  needs torch seeded on every rank);
- (a run killed after its first checkpoint and resumed ends with the weights of an
  uninterrupted run: tests/train/test_train_ray.py, in the same run as the kill-and-resume checks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from boom_ray.config import BoomConfig, load_config
from boom_ray.errors import BoomError
from boom_ray.train.launch import train_bags
from boom_ray.train.loop import build_embedder, load_options
from tests.train.bagtools import learnable_rows, run_config, write_bag

REPO = Path(__file__).resolve().parents[2]


def _weights(workdir, bag):
    from safetensors.torch import load_file

    return load_file(Path(workdir) / "models" / bag / "model.safetensors")


@pytest.fixture(scope="module")
def bf16_qwen3(tiny_qwen3_path, tmp_path_factory):
    """The tiny Qwen3 stored in bf16, as Qwen3 checkpoints are."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16") / "model"
    AutoModelForCausalLM.from_pretrained(tiny_qwen3_path, dtype=torch.float32).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_qwen3_path).save_pretrained(out)
    return out


def test_load_options_reach_from_pretrained_and_refuse_contradictions(bf16_qwen3, tmp_path):
    import torch

    raw = run_config(tmp_path, bf16_qwen3, ["bag20"])
    fp32 = BoomConfig.model_validate(raw)
    embedder = build_embedder(fp32, on_gpu=False)
    assert {p.dtype for p in embedder.parameters()} == {torch.float32}  # stored bf16, trained fp32
    assert embedder.model.config._attn_implementation == "sdpa"
    stored = BoomConfig.model_validate({**raw, "model": {**raw["model"], "dtype": "auto", "attn_implementation": "eager"},
                                       "train": {**raw["train"], "precision": "bf16"}})
    embedder = build_embedder(stored, on_gpu=False)
    assert {p.dtype for p in embedder.parameters()} == {torch.bfloat16}
    assert embedder.model.config._attn_implementation == "eager"
    with pytest.raises(BoomError, match="fp32 trains float32 weights"):
        load_options(BoomConfig.model_validate({**raw, "model": {**raw["model"], "dtype": "bfloat16"}}), on_gpu=False)
    with pytest.raises(BoomError, match="flash_attention_2 needs"):
        load_options(BoomConfig.model_validate({**raw, "model": {**raw["model"],
                                                                "attn_implementation": "flash_attention_2"}}), False)


@pytest.mark.slow
def test_fp32_training_from_a_bf16_checkpoint_keeps_fp32_weights_and_one_step_moves_them(ray_session, bf16_qwen3,
                                                                                       tmp_path):
    from safetensors.torch import load_file

    write_bag(tmp_path, "bag20", {"words": learnable_rows(16, 4)})
    cfg = BoomConfig.model_validate(run_config(tmp_path, bf16_qwen3, ["bag20"], max_steps=1, warmup_ratio=0.0,
                                              learning_rate=1e-5, precision="fp32"))
    [res] = train_bags(cfg)
    assert res.status == "trained", res.error
    trained = _weights(tmp_path, "bag20")
    base = load_file(bf16_qwen3 / "model.safetensors")
    assert {t.dtype for t in trained.values()} == {__import__("torch").float32}
    key = "layers.0.mlp.down_proj.weight"
    before, after = base[f"model.{key}"].float().numpy(), trained[key].numpy()
    assert np.mean(before != after) > 0.5  # nearly every element moved by ~1e-5
    assert np.abs(after - before).max() < 1e-4


@pytest.mark.slow
def test_smoke_config_trained_twice_gives_bit_identical_weights(ray_session, tmp_path):
    from boom_ray.corpus.bag_stage import run_bagging

    cfg = load_config(REPO / "jobs" / "configs" / "smoke.yaml",
                      {"workdir": str(tmp_path / "a"), "corpus.path": str(REPO / "data/wordnet-sample/corpus"),
                       "train.bags": ["bag50"]})
    run_bagging(cfg, show_progress=False)
    shutil.copytree(tmp_path / "a" / "bags", tmp_path / "b" / "bags")
    other = load_config(REPO / "jobs" / "configs" / "smoke.yaml",
                        {"workdir": str(tmp_path / "b"), "corpus.path": str(REPO / "data/wordnet-sample/corpus"),
                         "train.bags": ["bag50"]})
    results = train_bags(cfg) + train_bags(other)
    assert [r.status for r in results] == ["trained", "trained"], [r.error for r in results]
    a, b = _weights(tmp_path / "a", "bag50"), _weights(tmp_path / "b", "bag50")
    assert set(a) == set(b)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
