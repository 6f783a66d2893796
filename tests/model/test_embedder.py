"""Embedder: pooling, left padding + EOS, prompts, and the saved format read by sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from boom_ray.config import ModelConfig
from boom_ray.errors import BoomError
from boom_ray.model.embedder import Embedder, pool
from boom_ray.model.eos import patch_eos, tokenize_appending_eos
from boom_ray.model.st_format import read_sentence_transformers_settings

TEXTS = [
    "hello world",
    "cats",
    "the quick brown fox jumps over the lazy dog " * 8,  # longer than max_length (64): truncated
    "an ordinary sentence about rivers and mountains",
    "",
]


@pytest.fixture(scope="module")
def qwen(tiny_qwen3_path) -> Embedder:
    return Embedder.from_pretrained(str(tiny_qwen3_path), max_doc_length=64, max_query_length=48)


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return Embedder.from_pretrained("builtin:all-MiniLM-L6-v2", normalize=True)


@pytest.fixture(scope="module")
def qwen_saved(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen_saved") / "model"
    qwen.save(path)
    return path


def _st(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


# ---------------------------------------------------------------- tokenization
def test_last_pooling_pads_left_and_appends_eos(qwen):
    tok = qwen.tokenizer
    assert tok("a")["input_ids"][-1] == tok.eos_token_id  # patched tokenizer adds EOS itself
    feats = qwen.tokenize(["hello world", "cats"], max_length=32)
    ids, mask = feats["input_ids"], feats["attention_mask"]
    assert (ids[:, -1] == tok.eos_token_id).all()  # every row ends in EOS: left padding
    assert mask[:, -1].all() and not mask[1, 0]  # the shorter row is padded on the left
    n_real = int(mask[1].sum())
    assert ids[1, -n_real:].tolist()[:-1] == tok("cats", add_special_tokens=False)["input_ids"]


def test_truncation_keeps_eos_as_last_token(qwen):
    feats = qwen.tokenize([TEXTS[2]], max_length=10)
    ids = feats["input_ids"][0].tolist()
    assert len(ids) == 10 and ids[-1] == qwen.tokenizer.eos_token_id
    assert ids[:9] == qwen.tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"][:9]


def test_manual_eos_fallback_equals_patched_tokenizer(qwen, tiny_qwen3_path):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(tiny_qwen3_path), padding_side="left")
    assert plain("a")["input_ids"][-1] != plain.eos_token_id  # the raw tokenizer adds no EOS
    for n in (6, 64):
        manual = tokenize_appending_eos(plain, TEXTS, n)
        patched = qwen.tokenize(TEXTS, n)
        assert torch.equal(manual["input_ids"], patched["input_ids"])
        assert torch.equal(manual["attention_mask"], patched["attention_mask"])


def test_eos_patch_keeps_a_bos(tiny_qwen3_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3_path), bos_token="<|endoftext|>")
    tok.add_bos_token = True  # Llama-style: BOS first
    body = tok("a cat", add_special_tokens=False)["input_ids"]
    assert patch_eos(tok) == "flag"
    assert tok("a cat")["input_ids"] == [tok.bos_token_id, *body, tok.eos_token_id]


def test_mean_pooling_pads_right(minilm):
    feats = minilm.tokenize(["hello world", "a somewhat longer sentence here"], max_length=32)
    assert feats["attention_mask"][0, 0] and not feats["attention_mask"][0, -1]


# ---------------------------------------------------------------- pooling maths
def test_pool_matches_manual_computation():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=gen)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    torch.testing.assert_close(pool(hidden, left, "last"), hidden[:, 4])
    torch.testing.assert_close(pool(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 0]]))
    torch.testing.assert_close(pool(hidden, right, "mean"),
                               torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0), hidden[2, 0]]))
    torch.testing.assert_close(pool(hidden, right, "cls"), hidden[:, 0])
    nan_pad = hidden.clone()
    nan_pad[0, 3:] = float("nan")  # some attention kernels leave NaN at pad positions
    assert torch.isfinite(pool(nan_pad, right, "mean")).all()


def test_forward_matches_manual_last_token_and_is_normalised(qwen):
    feats = qwen.tokenize(TEXTS[:3], max_length=16)
    with torch.no_grad():
        emb = qwen(feats)
        hidden = qwen.model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).last_hidden_state
    manual = torch.nn.functional.normalize(hidden[:, -1], dim=-1)
    torch.testing.assert_close(emb, manual)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_forward_is_differentiable(qwen):
    emb = qwen(qwen.tokenize(["hello", "world"], max_length=8))
    emb.sum().backward()
    grads = [p.grad for p in qwen.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    qwen.model.zero_grad(set_to_none=True)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_qwen3_path):
    feats = None
    grads = []
    for checkpointing in (False, True):
        emb = Embedder.from_pretrained(str(tiny_qwen3_path))
        if checkpointing:
            emb.gradient_checkpointing_enable()
        flag = getattr(type(emb.model), "is_activation_checkpointing", None) and "is_activation_checkpointing"
        assert getattr(emb.model, flag or "is_gradient_checkpointing") == checkpointing
        emb.train()
        feats = feats or emb.tokenize(["hello world", "cats and dogs"], max_length=16)
        emb(feats).pow(2).sum(-1).mul(torch.tensor([1.0, -2.0])).sum().backward()
        grads.append(emb.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_weights_give_fp32_embeddings_close_to_fp32(qwen, tiny_qwen3_path):
    half = Embedder.from_pretrained(str(tiny_qwen3_path), dtype=torch.bfloat16, max_doc_length=64)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    feats = half.tokenize(TEXTS[:4], max_length=32)
    with torch.no_grad():
        out = half(feats)
        ref = qwen(feats)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    assert (out * ref).sum(-1).min() > 0.98  # same direction up to bf16 rounding


def test_encode_restores_order_and_does_not_depend_on_batching(qwen):
    one_batch = qwen.encode(TEXTS, batch_size=64)
    small = qwen.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(one_batch, small, atol=1e-5)
    singles = np.stack([qwen.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(one_batch, singles, atol=1e-5)
    assert one_batch.dtype == np.float32 and one_batch.shape == (len(TEXTS), qwen.embedding_dim)


def test_prompts_and_query_template(qwen):
    assert qwen.format_query("what is a cat") == (
        "Instruct: Given a query, retrieve relevant passages that answer the query\nQuery: what is a cat")
    assert qwen.format_query("q", "Find synonyms") == "Instruct: Find synonyms\nQuery: q"
    assert qwen.query_prompt == "Instruct: Given a query, retrieve relevant passages that answer the query\nQuery: "
    np.testing.assert_allclose(qwen.encode_queries(["q1", "q2"]),
                               qwen.encode(["q1", "q2"], prompt=qwen.query_prompt, max_length=48), atol=1e-6)


# ---------------------------------------------------------------- the saved format
def test_saved_tiny_qwen3_matches_sentence_transformers(qwen, qwen_saved):
    st = _st(qwen_saved)
    np.testing.assert_allclose(st.encode(TEXTS), qwen.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(st.encode(TEXTS, prompt_name="query"),
                               qwen.encode(TEXTS, prompt=qwen.query_prompt), atol=1e-5)
    np.testing.assert_allclose(st.encode(TEXTS, prompt=qwen.query_prompt),
                               qwen.encode(TEXTS, prompt=qwen.query_prompt), atol=1e-5)


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False)])
def test_other_poolings_match_sentence_transformers(tiny_qwen3_path, tmp_path, pooling, normalize):
    emb = Embedder.from_pretrained(str(tiny_qwen3_path), pooling=pooling, normalize=normalize, max_doc_length=64)
    emb.save(tmp_path / "m")
    ours = emb.encode(TEXTS)
    # (the empty text has no tokens at all under mean pooling here: a zero vector, as in ST)
    assert np.allclose(np.linalg.norm(ours[:-1], axis=1), 1.0, atol=1e-5) == normalize
    np.testing.assert_allclose(_st(tmp_path / "m").encode(TEXTS), ours, atol=1e-5)
    again = Embedder.from_pretrained(str(tmp_path / "m"))
    assert (again.config.pooling, again.config.normalize) == (pooling, normalize)


def test_saved_minilm_matches_sentence_transformers(minilm, tmp_path, minilm_path):
    minilm.save(tmp_path / "m")
    st = _st(tmp_path / "m")
    ours = minilm.encode(TEXTS)
    np.testing.assert_allclose(st.encode(TEXTS), ours, atol=1e-5)
    np.testing.assert_allclose(st.encode(TEXTS, prompt_name="query"),
                               minilm.encode(TEXTS, prompt=minilm.query_prompt), atol=1e-5)
    # and the untouched original MiniLM agrees with our reading of it (mean pooling, 256 tokens)
    np.testing.assert_allclose(_st(minilm_path).encode(TEXTS), ours, atol=1e-5)


def test_saved_files(qwen, qwen_saved):
    modules = json.loads((qwen_saved / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((qwen_saved / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] and not pooling["pooling_mode_mean_tokens"]
    assert pooling["word_embedding_dimension"] == qwen.embedding_dim
    st_cfg = json.loads((qwen_saved / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"]["query"] == qwen.query_prompt and st_cfg["default_prompt_name"] is None
    assert json.loads((qwen_saved / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    assert json.loads((qwen_saved / "tokenizer_config.json").read_text())["padding_side"] == "left"
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(qwen_saved))  # what any HF / ST user gets
    assert plain("a cat")["input_ids"][-1] == plain.eos_token_id and plain.padding_side == "left"
    assert (qwen_saved / "model.safetensors").is_file() and (qwen_saved / "config.json").is_file()
    assert not [p for p in qwen_saved.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_reload_reads_settings_back(qwen, qwen_saved):
    again = Embedder.from_pretrained(str(qwen_saved))
    assert again.config.pooling == "last" and again.config.max_doc_length == 64
    assert again.config.default_instruction == qwen.config.default_instruction
    np.testing.assert_allclose(again.encode(TEXTS), qwen.encode(TEXTS), atol=1e-6)
    # an explicitly set config field beats the folder's files; unset fields do not
    cfg = ModelConfig(pooling="mean", default_instruction="Other task")
    other = Embedder.from_pretrained(str(qwen_saved), cfg)
    assert other.config.pooling == "mean" and other.query_prompt == "Instruct: Other task\nQuery: "
    assert other.config.max_doc_length == 64


def test_sharded_save_with_index_and_overwrite(qwen, tmp_path):
    target = tmp_path / "sharded"
    target.mkdir()
    (target / "stale.txt").write_text("from an older export")
    qwen.save(target, max_shard_size="40KB")
    index = json.loads((target / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (target / "stale.txt").exists()  # replaced as a whole, not merged into
    np.testing.assert_allclose(_st(target).encode(TEXTS[:2]), qwen.encode(TEXTS[:2]), atol=1e-5)


def test_save_accepts_gathered_state_dict(qwen, tmp_path):
    state = {k: torch.zeros_like(v) if k.endswith("norm.weight") else v.clone()
             for k, v in qwen.model.state_dict().items()}
    qwen.save(tmp_path / "z", state_dict=state)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "z" / "model.safetensors")
    assert saved["norm.weight"].abs().sum() == 0


def test_minilm_settings_from_its_folder(minilm_path):
    settings = read_sentence_transformers_settings(minilm_path)
    assert settings["pooling"] == "mean" and settings["normalize"] is True
    assert settings["max_doc_length"] == 256


def test_bad_references_raise_clear_errors(tmp_path):
    with pytest.raises(BoomError, match="unknown builtin"):
        Embedder.from_pretrained("builtin:nope")
    with pytest.raises(BoomError, match="cannot load"):
        Embedder.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(BoomError, match="unknown model setting"):
        Embedder.from_pretrained("builtin:all-MiniLM-L6-v2", poolng="mean")
    bad = tmp_path / "st"
    (bad / "1_Pooling").mkdir(parents=True)
    (bad / "modules.json").write_text(json.dumps([{"path": "1_Pooling", "type": "x.Pooling"}]))
    (bad / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(BoomError, match="1_Pooling.*not supported"):
        read_sentence_transformers_settings(bad)


def test_matryoshka_dims_are_recorded_and_truncate_like_sentence_transformers(tiny_qwen3_path, tmp_path):
    """The saved model lists its Matryoshka sizes; `truncate_dim` stays unset (full-size encode by
    default); ST's truncate_dim=d + renormalisation equals our truncated, renormalised embedding."""
    from boom_ray.losses.matryoshka import truncate

    emb = Embedder.from_pretrained(str(tiny_qwen3_path), max_doc_length=64)
    emb.matryoshka_dims = [4, 8]
    emb.save(tmp_path / "m")
    st_cfg = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())
    assert st_cfg["matryoshka_dims"] == [4, 8] and "truncate_dim" not in st_cfg
    assert Embedder.from_pretrained(str(tmp_path / "m")).matryoshka_dims == [4, 8]
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "m"), device="cpu", truncate_dim=4)
    theirs = st.encode(TEXTS[:-1], normalize_embeddings=True)
    ours = truncate(torch.from_numpy(emb.encode(TEXTS[:-1])), 4).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(TEXTS[:1]).shape[1] == emb.embedding_dim


def test_loading_draws_no_progress_bar_and_leaves_the_setting_as_it_was(tiny_qwen3_path, capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    Embedder.from_pretrained(str(tiny_qwen3_path))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
