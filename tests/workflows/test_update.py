"""`boom update` end to end on the 2-CPU local Ray: history sample + new data -> update model
-> multislerp into the current model, with lineage, training cost and scores recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boom_ray.config import validate_config
from boom_ray.workflows.update import run_update

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "wordnet-sample"


def _head(src: Path, dst: Path, n: int) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    lines = src.read_text().splitlines()[:n]
    dst.write_text("\n".join(lines) + "\n")
    return len(lines)


def _tiny_suite(dst: Path) -> None:
    """A 12-query slice of the sample's retrieval suite (qrels kept consistent)."""
    src = SAMPLE / "suites" / "test" / "definition_retrieval"
    queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()[:12]]
    wanted = {q["_id"] for q in queries}
    qrels = [line for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]
             if line.split("\t")[0] in wanted]
    docs_needed = {line.split("\t")[1] for line in qrels}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    docs = [d for d in docs if d["_id"] in docs_needed] + [d for d in docs if d["_id"] not in docs_needed][:30]
    (dst / "qrels").mkdir(parents=True)
    (dst / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (dst / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (dst / "suite.json").write_text((src / "suite.json").read_text())


@pytest.mark.slow
def test_update_trains_merges_and_records_lineage(ray_session, tmp_path, minilm_path):
    old = tmp_path / "old"
    for task in ("definition_retrieval", "lexname_classification"):
        _head(SAMPLE / "corpus" / f"{task}.jsonl", old / f"{task}.jsonl", 100)
    new = tmp_path / "new"
    _head(SAMPLE / "corpus" / "reverse_dictionary.jsonl", new / "reverse_dictionary.jsonl", 60)
    _tiny_suite(tmp_path / "suite")
    cfg = validate_config({
        "workdir": str(tmp_path / "work"),
        "corpus": {"path": str(new)},
        "bagging": {"num_cpus": 0.5},
        "model": {"pooling": "mean", "max_query_length": 32, "max_doc_length": 32},
        "train": {"global_batch_size": 8, "group_size": 2, "max_steps": 2, "warmup_ratio": 0.0,
                  "zero_stage": 1, "gradient_checkpointing": False, "cpus_per_worker": 0.5},
        "merge": {"memory_budget": "64MB", "num_cpus": 0.5},
        "eval": {"suites": [{"path": str(tmp_path / "suite")}], "encoder_cpus": 0.5},
        "update": {"current_model": str(minilm_path), "old_corpus": str(old)},
    })
    record = run_update(cfg)

    assert record["data"] == {"history": 80, "new": 60, "selected": 140, "old_corpus": 200, "new_corpus": 60}
    lineage = record["lineage"]
    assert lineage["current_model"]["path"] == str(minilm_path) and lineage["current_model"]["fingerprint"]
    assert lineage["merge"] == {"method": "multislerp", "weights": [200 / 1e6, 60 / 1e6]}
    merged = Path(lineage["updated_model"])
    manifest = json.loads((merged / "boom_merge.json").read_text())
    assert [m["parameters"]["weight"] for m in manifest["models"]] == [200 / 1e6, 60 / 1e6]
    assert (merged / "modules.json").exists()  # still a sentence-transformers model
    cost = record["training_cost"]
    # five bags of (200 + 60) rows = 3 x 260 rows against 140: the update is about 5.6x cheaper
    assert cost["update_tokens"] > 0 and 4.5 < cost["retrain_over_update"] < 7
    assert set(record["scores"]) == {"current", "updated"}
    assert all(0 <= s["id_mean"] <= 1 for s in record["scores"].values())
    assert json.loads((tmp_path / "work" / "update.json").read_text())["data"] == record["data"]
    train_manifest = json.loads((tmp_path / "work" / "models" / "update" / "boom_train.json").read_text())
    assert train_manifest["request"]["model"]["name_or_path"] == str(minilm_path)
    # model cards: the update export's, and the updated model's naming its lineage, with its scores
    import yaml
    from huggingface_hub import ModelCard

    from boom_ray.merge.request import from_mergekit
    from boom_ray.cards.build import mergekit_yaml_from_card

    export_card = ModelCard.load(tmp_path / "work" / "models" / "update" / "README.md")
    assert "140 training rows" in export_card.text and "- history: 80 rows" in export_card.text
    card = ModelCard.load(merged / "README.md")
    assert "incremental-update" in card.data.tags and card.data.base_model is None  # a local folder, no hub id
    assert f"An incremental update of `{minilm_path}`" in card.text and "60 new rows" in card.text
    assert {r.metric_value for r in card.data.eval_results} >= {round(record["scores"]["updated"]["id_mean"], 6)}
    request = from_mergekit(yaml.safe_load(mergekit_yaml_from_card(card.text)))
    assert [m.parameters["weight"] for m in request.models] == [200 / 1e6, 60 / 1e6]
    assert [m.path for m in request.models] == [m["path"] for m in manifest["models"]]
