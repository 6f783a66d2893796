"""End to end: `boom bag` on a 2-CPU local Ray, with planted bad rows."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from boom_ray.config import validate_config
from boom_ray.corpus.bags import read_bag, read_manifest, task_index
from boom_ray.corpus.bag_stage import TooManyBadRows, run_bagging

SIZES = {"retrieval/msmarco": 230, "nli": 170, "topics": 61}
TYPES = {"retrieval/msmarco": None, "nli": "symmetric_sts", "topics": "symmetric_class"}


def make_corpus(root, bad=True):
    for task, n in SIZES.items():
        path = root / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for i in range(n):
                row = {"query": f"{task} query {i}", "pos": [f"pos {i}"], "neg": [f"neg {i} {j}" for j in range(7)]}
                if TYPES[task]:
                    row["type"] = TYPES[task]
                f.write(json.dumps(row) + "\n")
            if bad and task == "nli":
                f.write('{"query": "truncated\n')
                f.write(json.dumps({"query": "q", "pos": [], "neg": []}) + "\n")
    return root


def cfg_for(tmp_path, corpus, workdir="work", **bagging):
    return validate_config({
        "workdir": str(tmp_path / workdir) if "://" not in workdir else workdir,
        "corpus": {"path": str(corpus), "max_bad_fraction": bagging.pop("max_bad_fraction", 0.01)},
        "bagging": {"seed": 3, **bagging},
    })


def test_bad_rows_fail_the_stage_after_the_quarantine_is_written(ray_session, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, corpus, max_bad_fraction=0.0)
    with pytest.raises(TooManyBadRows, match=r"2 of 463 rows .* are bad.*invalid_json: 1"):
        run_bagging(cfg, show_progress=False)
    work = tmp_path / "work"
    quarantined = [json.loads(line) for line in (work / "quarantine" / "nli.jsonl.quarantine.jsonl").open()]
    assert [(q["source"], q["line"], q["reason"]) for q in quarantined] == [
        ("nli.jsonl", 171, "invalid_json"), ("nli.jsonl", 172, "empty_pos")]
    summary = json.loads((work / "quarantine" / "summary.json").read_text())
    assert summary["read"] == 463 and summary["kept"] == 461 and summary["quarantined"] == 2
    # no bag was finished, and nothing temporary is left behind
    assert sorted(os.listdir(work / "bags")) == []
    assert not [p for p in os.listdir(work) if p.startswith(".tmp")]


def test_bags_are_stratified_counted_and_reused(ray_session, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, corpus)
    outcome = run_bagging(cfg, show_progress=False)
    assert outcome.read == outcome.kept + outcome.quarantined == 463
    assert set(outcome.bags.values()) == {"written"}
    for name, ratio in [("bag20", 0.2), ("bag40", 0.4), ("bag60", 0.6), ("bag80", 0.8), ("bag100", 1.0)]:
        uri = str(tmp_path / "work" / "bags" / name)
        manifest = read_manifest(uri)
        assert manifest["rows"] == {"read": 463, "kept": 461, "quarantined": 2,
                                    "selected": manifest["rows"]["selected"]}
        table = read_bag(uri)
        rows, types = task_index(table)
        for task, n in SIZES.items():
            expected = int(ratio * n + 0.5)
            assert manifest["tasks"][task]["selected"] == len(rows[task]) == expected
            assert manifest["tasks"][task]["source_rows"] == n
            assert types[task] == TYPES[task]
        keys = list(zip(table["task"].to_pylist(), table["line"].to_pylist()))
        assert len(keys) == len(set(keys))  # without replacement
    assert read_bag(str(tmp_path / "work" / "bags" / "bag100")).num_rows == 461
    again = run_bagging(cfg, show_progress=False)
    assert set(again.bags.values()) == {"up to date"}
    with (corpus / "topics.jsonl").open("a") as f:
        f.write(json.dumps({"query": "new", "pos": ["p"], "neg": []}) + "\n")
    redone = run_bagging(cfg, show_progress=False)
    assert set(redone.bags.values()) == {"written"}
    assert read_manifest(str(tmp_path / "work" / "bags" / "bag100"))["tasks"]["topics"]["selected"] == 62


def test_result_does_not_depend_on_parallelism_or_chunking(ray_session, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", bad=False)
    wide = cfg_for(tmp_path, corpus, "wide", num_cpus=0.5, chunk_rows=16, ratios=[0.3, 0.7])
    narrow = cfg_for(tmp_path, corpus, "narrow", num_cpus=2, chunk_rows=5000, ratios=[0.3, 0.7])
    run_bagging(wide, show_progress=False)
    run_bagging(narrow, show_progress=False)
    for bag in ["bag30", "bag70"]:
        a = read_bag(str(tmp_path / "wide" / "bags" / bag))
        b = read_bag(str(tmp_path / "narrow" / "bags" / bag))
        assert a.equals(b)


def test_nested_option_and_parquet_corpus_on_a_file_uri(ray_session, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [], "type": "retrieval"} for i in range(300)]
    pq.write_table(pa.Table.from_pylist(rows), corpus / "web.parquet")
    cfg = cfg_for(tmp_path, corpus, f"file://{tmp_path}/uri-work", nested=True, ratios=[0.2, 0.6])
    run_bagging(cfg, show_progress=False)
    small = set(read_bag(f"file://{tmp_path}/uri-work/bags/bag20")["line"].to_pylist())
    large = set(read_bag(f"file://{tmp_path}/uri-work/bags/bag60")["line"].to_pylist())
    assert len(small) == 60 and len(large) == 180 and small < large
