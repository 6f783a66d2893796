"""The shard writer of the streamed ZeRO-3 export: what it writes loads back in transformers
with the same weights, sharded with an index the way Hugging Face shards (the two-worker
ZeRO-3 training test in test_train_ray.py runs the streaming export itself end to end)."""

from __future__ import annotations

import json

import torch

from boom_ray.train.zero3_export import ShardWriter


def _tiny(tmp_path):
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    return Qwen3Model(Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8))


def _write(model, out, max_bytes):
    model.config.save_pretrained(out)
    writer = ShardWriter(out, max_bytes)
    for k, v in model.state_dict().items():
        writer.add(k, v.detach().clone())
    return writer.close()


def test_shards_fill_up_to_the_limit_and_reload_identically(tmp_path):
    from transformers import AutoModel

    model = _tiny(tmp_path)
    names = _write(model, tmp_path / "m", 20_000)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert len(names) > 2 and sorted(set(index["weight_map"].values())) == names
    assert names[0] == f"model-00001-of-{len(names):05d}.safetensors"
    assert set(index["weight_map"]) == set(model.state_dict())
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in model.state_dict().values())
    for name in names:
        assert (tmp_path / "m" / name).stat().st_size < 20_000 + 16_384  # one tensor (the embedding) may overflow
    back = AutoModel.from_pretrained(tmp_path / "m", dtype=torch.float32).state_dict()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_a_model_that_fits_one_shard_is_model_safetensors(tmp_path):
    model = _tiny(tmp_path)
    assert _write(model, tmp_path / "m", 10**9) == ["model.safetensors"]
    assert not (tmp_path / "m" / "model.safetensors.index.json").exists()
