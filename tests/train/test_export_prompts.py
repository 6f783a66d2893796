"""An export advertises only the query prompts its training used (sentence-transformers `prompts`)."""

from __future__ import annotations

import json

import pytest

from boom_ray.model.embedder import Embedder
from boom_ray.train.export import bag_prompt_usage, trained_prompts, write_export
from tests.train.bagtools import learnable_rows, write_bag

TEMPLATE = "Instruct: {instruction}\nQuery: {query}"


def test_trained_prompts_rules():
    own = {"a": ["Find A"], "b": ["Find B"]}
    # every row carries its own prompt: the default instruction was never used, so no `query` prompt
    assert trained_prompts(TEMPLATE, "Default", 0, own) == {"a": "Instruct: Find A\nQuery: ",
                                                            "b": "Instruct: Find B\nQuery: "}
    # the DESIGN's reference recipe: rows without a prompt train with the default instruction
    assert trained_prompts(TEMPLATE, "Default", 3, {}) == {"query": "Instruct: Default\nQuery: ", "document": ""}
    # a template without an instruction slot gives every row the same prefix
    assert trained_prompts("query: {query}", "Default", 0, own)["query"] == "query: "
    # a task whose rows carry different prompts gets no single named prompt; a non-prefix template none
    assert trained_prompts(TEMPLATE, "D", 0, {"a": ["x", "y"]}) == {}
    assert trained_prompts("{query} (search)", "D", 5, {}) == {}


def _rows(n, seed, prompt):
    return [{**r, "prompt": prompt} for r in learnable_rows(n, seed)]


def test_bag_prompt_usage_counts_rows_without_a_prompt(tmp_path):
    write_bag(tmp_path, "bag20", {"t/a": _rows(3, 1, "Find A"), "t/b": _rows(2, 2, None) + _rows(1, 3, "")})
    assert bag_prompt_usage(str(tmp_path / "bags" / "bag20")) == (3, {"t/a": ["Find A"]})


@pytest.mark.parametrize("own_prompts", [True, False])
def test_export_config_matches_training(tmp_path, tiny_qwen3_path, own_prompts):
    from sentence_transformers import SentenceTransformer

    tasks = {"t/a": _rows(4, 1, "Find A" if own_prompts else None), "t/b": _rows(4, 2, "Find B" if own_prompts else None)}
    write_bag(tmp_path, "bag100", tasks)
    embedder = Embedder.from_pretrained(str(tiny_qwen3_path), pooling="last")
    final = write_export(embedder, embedder.model, None, str(tmp_path), "bag100", {"bag": "bag100"})
    cfg = json.loads(open(f"{final}/config_sentence_transformers.json").read())
    if own_prompts:
        assert "query" not in cfg["prompts"]  # the default instruction was never trained
        assert cfg["prompts"] == {"t/a": "Instruct: Find A\nQuery: ", "t/b": "Instruct: Find B\nQuery: "}
    else:
        assert cfg["prompts"]["query"] == embedder.query_prompt  # the reference decoder behaviour
    assert cfg["default_prompt_name"] is None
    st = SentenceTransformer(final, device="cpu")
    # the model card: parsed by huggingface_hub, data counts from the bag manifest, the trained prompt
    from huggingface_hub import ModelCard

    mc = ModelCard.load(f"{final}/README.md")
    assert mc.data.library_name == "sentence-transformers" and mc.data.pipeline_tag == "sentence-similarity"
    assert "8 training rows" in mc.text
    assert ('prompt_name="t/a"' if own_prompts else 'prompt_name="query"') in mc.text
    assert json.loads(open(f"{final}/boom_train.json").read())["data"]["rows"] == {"selected": 8}
    # (sentence-transformers adds empty query/document entries of its own)
    assert {k: v for k, v in st.prompts.items() if v} == {k: v for k, v in cfg["prompts"].items() if v}
