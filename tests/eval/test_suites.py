"""Suite readers: tags from suite.json / overrides, and broken suites named in the error."""

from __future__ import annotations

import json

import pytest

from boom_ray.eval.suites import RetrievalSuite, SuiteError, load_suite


def test_retrieval_suite_defaults_and_overrides(tmp_path, kit):
    root = kit.make_retrieval_suite(tmp_path / "beir")
    suite = load_suite(root)
    assert isinstance(suite, RetrievalSuite) and suite.type == "retrieval"
    assert suite.domain == "out" and suite.instruction is None
    assert suite.corpus_texts[1] == "T beta"
    assert suite.query_ids == ["q1", "q2", "q3"]
    assert load_suite(root, default_domain="in", default_instruction="x").domain == "in"
    (root / "suite.json").write_text(json.dumps({"domain": "out", "instruction": "from file"}))
    s = load_suite(root, default_domain="in", default_instruction="flag")
    assert (s.domain, s.instruction) == ("out", "from file")  # suite.json beats CLI defaults
    s = load_suite(root, domain="in", instruction="ref")
    assert (s.domain, s.instruction) == ("in", "ref")  # a run config's SuiteRef beats suite.json


def test_dev_qrels_accepted(tmp_path, kit):
    root = kit.make_retrieval_suite(tmp_path / "beir")
    (root / "qrels" / "test.tsv").rename(root / "qrels" / "dev.tsv")
    assert load_suite(root).qrels["q1"] == {"d2": 1, "d3": 2}


@pytest.mark.parametrize("breakage, expected", [
    (lambda r: (r / "corpus.jsonl").unlink(), r"corpus\.jsonl: file not found"),
    (lambda r: (r / "corpus.jsonl").write_text(""), r"corpus\.jsonl: empty corpus"),
    (lambda r: (r / "qrels" / "test.tsv").unlink(), r"qrels/test\.tsv: file not found"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n"),
     r"test\.tsv: corpus-id 'nope' \(query 'q1'\) is not in corpus\.jsonl"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("q-id\tc-id\tscore\nqx\td1\t1\n"),
     r"test\.tsv: query-id 'qx' is not in queries\.jsonl"),
    (lambda r: (r / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": \n'),
     r"queries\.jsonl:2: not valid JSON"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d1"}\n'), r"corpus\.jsonl:1: missing field 'text'"),
    (lambda r: (r / "suite.json").write_text('{"type": "rerank"}'), r"suite\.json: unknown type 'rerank'"),
    (lambda r: (r / "suite.json").write_text('{"domain": "middle"}'), r"suite\.json: domain must be"),
])
def test_broken_retrieval_suite_names_the_file(tmp_path, kit, breakage, expected):
    root = kit.make_retrieval_suite(tmp_path / "beir")
    breakage(root)
    with pytest.raises(SuiteError, match=expected):
        load_suite(root)


def test_broken_symmetric_suites(tmp_path, kit):
    with pytest.raises(SuiteError, match="suite directory not found"):
        load_suite(tmp_path / "missing")
    sts = kit.make_sts_suite(tmp_path / "sts")
    (sts / "test.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": "high"}\n')
    with pytest.raises(SuiteError, match=r"test\.jsonl:1: field 'score' must be int or float"):
        load_suite(sts)
    cls = kit.make_text_suite(tmp_path / "cls", "classification", None, [("t", "a")])
    with pytest.raises(SuiteError, match=r"train\.jsonl: file not found"):
        load_suite(cls)
    one = kit.make_text_suite(tmp_path / "one", "classification", [("t", "a")], [("t", "a")])
    with pytest.raises(SuiteError, match="at least 2 distinct labels"):
        load_suite(one)
