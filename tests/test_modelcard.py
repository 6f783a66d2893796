"""Model cards: huggingface_hub's ModelCard reads them, and a merge card's mergekit YAML, run with
`boom merge`, reproduces the merged tensors bit for bit."""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import ModelCard

from boom_ray.cli import main as boom
from boom_ray.merge.request import MergeRequest, ModelInput, from_mergekit
from boom_ray.merge.task import merge
from boom_ray.cards import build as card
from boom_ray.cards.evaluated import add_results
from tests.merge.conftest import make_model

RESULTS = {"suites": [
    {"name": "defs", "type": "retrieval", "domain": "in", "main_metric": "ndcg@10", "main": 0.61234,
     "metrics": {"ndcg@10": 0.61234, "mrr@10": 0.5, "recall@100": 0.9, "num_queries": 200}},
    {"name": "verbs_sts", "type": "sts", "domain": "out", "main_metric": "spearman", "main": 0.4,
     "metrics": {"spearman": 0.4, "pearson": 0.41, "num_pairs": 200}}], "id_mean": 0.61234, "ood_mean": 0.4}
BAG = {"bag": "bag40", "ratio": 0.4, "source": {"path": "data/corpus"},
       "rows": {"read": 1010, "kept": 1000, "quarantined": 10, "selected": 400},
       "tasks": {"defs": {"type": "retrieval", "selected": 300, "source_rows": 750},
                 "syn": {"type": "symmetric", "selected": 100, "source_rows": 250}}}


def _tensors(folder) -> dict[str, tuple]:
    """name -> (dtype, shape, raw bytes) of every tensor, read straight from the safetensors files."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                out[name] = (info["dtype"], tuple(info["shape"]), raw[8 + n + start:8 + n + end])
    return out


def test_export_card_parses_with_model_index():
    text = card.export_card(
        name="bag40", bag="bag40", base_model="builtin:all-MiniLM-L6-v2",
        base_hub_id=card.hub_id("builtin:all-MiniLM-L6-v2", False), corpus="data/corpus", bag_manifest=BAG,
        model_settings={"pooling": "mean", "max_query_length": 64}, train_settings={"learning_rate": 3e-5, "epochs": 1},
        training={"steps": 12, "tokens_seen": 34567, "final_loss": 0.5},
        prompts={"defs": "Instruct: Define\nQuery: "}, model_ref="/runs/x/models/bag40", results=RESULTS)
    mc = ModelCard(text)
    assert mc.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert mc.data.library_name == "sentence-transformers" and mc.data.pipeline_tag == "sentence-similarity"
    assert "sentence-transformers" in mc.data.tags and mc.data.datasets == ["data/corpus"]
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in mc.data.eval_results}
    assert results[("defs", "ndcg_at_10")] == 0.61234 and results[("verbs_sts", "spearman")] == 0.4
    assert "400 training rows of 1,000 valid corpus rows (10 quarantined)" in mc.text
    assert "| `defs` | retrieval | 300 | 750 |" in mc.text
    assert 'prompt_name="defs"' in mc.text and "a 40% bag" in mc.text and "`train.learning_rate`" in mc.text
    # no results known yet: no model-index, and the card says so
    bare = ModelCard(card.export_card(name="b", bag="b", base_model="/local/m", base_hub_id=None, corpus="c",
                                      bag_manifest=None, model_settings={}, train_settings={}, training={},
                                      prompts={"query": "Instruct: x\nQuery: "}, model_ref="b"))
    assert bare.data.eval_results is None and bare.data.base_model is None
    assert 'prompt_name="query"' in bare.text and "Not evaluated" in bare.text


@pytest.mark.parametrize("method, params, dtype", [("multislerp", {}, None), ("linear", {"normalize": True}, "bfloat16")])
def test_merge_card_yaml_reproduces_the_merge_bit_for_bit(tmp_path, monkeypatch, method, params, dtype):
    inputs = []
    for seed, (bag, weight) in enumerate([("bag20", 0.2), ("bag60", 0.6), ("bag100", 1.0)]):
        path = make_model(tmp_path / "models" / bag, seed)
        if bag != "bag60":  # the inputs' own cards name the corpus (one of them twice), the merge's card too
            (path / "README.md").write_text("---\ndatasets:\n- data/corpus\n---\n# " + bag + "\n")
        (path / "boom_train.json").write_text(json.dumps({"bag": bag, "data": {"rows": {"selected": 100 * (seed + 1)}},
                                                          "request": {"model": {"name_or_path": "Qwen/Qwen3-4B"}}}))
        inputs.append(ModelInput(f"models/{bag}", {"weight": weight}))
    monkeypatch.chdir(tmp_path)  # relative input paths, as a run config with a relative workdir gives
    request = MergeRequest(method, inputs, parameters=params, dtype=dtype)
    merge(request, "merges/m", progress=False)
    text = (tmp_path / "merges" / "m" / "README.md").read_text()
    mc = ModelCard(text)
    assert mc.data.base_model == "Qwen/Qwen3-4B" and "merge" in mc.data.tags and method in mc.data.tags
    assert mc.data.datasets == ["data/corpus"]
    assert "| `" + str(tmp_path / "models" / "bag60") + "` | bag60 | 200 | 0.6 | 0.333 |" in mc.text
    config = tmp_path / "elsewhere" / "mergekit.yaml"
    config.parent.mkdir()
    config.write_text(card.mergekit_yaml_from_card(text))
    assert from_mergekit(yaml.safe_load(config.read_text())).to_dict() == \
        {**request.to_dict(), "models": [{"path": str(tmp_path / m.path), "parameters": m.parameters} for m in inputs]}
    monkeypatch.chdir(config.parent)  # the YAML works from any directory
    assert boom(["merge", str(config), "--out", str(tmp_path / "again")]) == 0
    first, again = _tensors(tmp_path / "merges" / "m"), _tensors(tmp_path / "again")
    assert first.keys() == again.keys() and len(first) == 5
    assert all(first[k] == again[k] for k in first)
    assert {v[0] for v in first.values()} == {"BF16" if dtype else "F32"}


def test_update_card_names_the_lineage():
    request = {"method": "multislerp", "models": [{"path": "/m/current", "parameters": {"weight": 2.8}},
                                                 {"path": "/w/models/update", "parameters": {"weight": 4.3}}],
               "base_model": None, "parameters": {}, "dtype": None, "copy_files_from": "/m/current"}
    lineage = {"current_model": {"path": "/m/current"}, "old_corpus": "old/", "new_corpus": "new/",
               "history_ratio": 0.4, "merge": {"method": "multislerp", "weights": [2.8, 4.3]}}
    text = card.update_card(name="updated", request=request, inputs=[{}, {"bag": "update", "rows": 500}],
                            lineage=lineage, data={"history": 400, "new": 100, "old_corpus": 1000},
                            base_hub_id=None, prompts={}, model_ref="/w/merges/updated", results=RESULTS)
    mc = ModelCard(text)
    assert mc.data.datasets == ["old/", "new/"] and "incremental-update" in mc.data.tags
    assert "100 new rows (`new/`) plus a 40% sample of the old corpus (400 of 1,000 rows" in mc.text
    assert "weights 2.8 (current) and 4.3 (update)" in mc.text and len(mc.data.eval_results) == 5
    cfg = yaml.safe_load(card.mergekit_yaml_from_card(text))
    assert cfg["tokenizer_source"] == "/m/current" and [m["parameters"]["weight"] for m in cfg["models"]] == [2.8, 4.3]


def test_evaluation_puts_results_on_the_card_once(tmp_path):
    """After the run evaluates a model, its card carries one model-index result per suite (the main
    score) and names the corpus; evaluating again replaces those results, never duplicates them."""
    model = tmp_path / "models" / "bag40"
    model.mkdir(parents=True)
    (model / "README.md").write_text(card.export_card(
        name="bag40", bag="bag40", base_model="/local/m", base_hub_id=None, corpus="unknown", bag_manifest=None,
        model_settings={}, train_settings={}, training={}, prompts={}, model_ref=str(model)))
    assert add_results(str(model), RESULTS, corpus="data/corpus")
    mc = ModelCard.load(model / "README.md")
    assert mc.data.datasets == ["data/corpus"] and mc.data.model_name == "bag40"
    assert [(r.task_type, r.dataset_name, r.metric_type, r.metric_value) for r in mc.data.eval_results] == [
        ("Retrieval", "defs", "ndcg_at_10", 0.61234), ("STS", "verbs_sts", "spearman", 0.4)]
    assert "| defs | retrieval | in | ndcg@10 | 0.6123 |" in mc.text and "Not evaluated" not in mc.text
    assert not add_results(str(model), RESULTS, corpus="data/corpus")  # the same results: the card is unchanged
    again = {**RESULTS, "suites": [{**RESULTS["suites"][0], "main": 0.7}]}  # re-evaluated: replaced, not added
    assert add_results(str(model), again, corpus="elsewhere")
    mc = ModelCard.load(model / "README.md")
    assert [(r.dataset_name, r.metric_value) for r in mc.data.eval_results] == [("defs", 0.7), ("verbs_sts", 0.4)]
    assert mc.data.datasets == ["data/corpus"] and mc.text.count("## Evaluation") == 1
    # a card boom-ray did not write (a base model's) and a folder without one are left alone
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\ntags:\n- sentence-transformers\n---\n# base\n")
    assert not add_results(str(base), RESULTS, corpus="data/corpus") and not add_results(str(tmp_path), RESULTS)
    assert (base / "README.md").read_text() == "---\ntags:\n- sentence-transformers\n---\n# base\n"
