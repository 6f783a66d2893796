"""`boom eval` on tiny suites with the real MiniLM: table on stdout, results JSON, clear errors."""

from __future__ import annotations

import json

import pytest

from boom_ray.cli import main as boom


def test_boom_eval_writes_results_and_table(tmp_path, kit, minilm_path, capsys):
    ret = kit.make_retrieval_suite(tmp_path / "ret")
    sts = kit.make_sts_suite(tmp_path / "sts", {"domain": "in"})
    clu = kit.make_text_suite(tmp_path / "clu", "clustering", None,
                              [("a cat sleeps", "pets"), ("a dog barks", "pets"), ("stocks fell", "money"),
                               ("bond yields rose", "money")])
    out = tmp_path / "results.json"
    assert boom(["eval", "--model", str(minilm_path), "--suite", str(ret), "--suite", str(sts), "--suite", str(clu),
                 "--out", str(out), "--instruction", "find the passage", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "ID mean" in printed and "OOD mean" in printed and "ndcg@10" in printed
    res = json.loads(out.read_text())
    by_name = {s["name"]: s for s in res["suites"]}
    assert by_name["ret"]["domain"] == "out" and by_name["ret"]["instruction"] == "find the passage"
    assert by_name["sts"]["domain"] == "in"  # suite.json beats --domain's default
    assert by_name["sts"]["instruction"] == "find the passage"  # the flag fills every suite without one
    assert 0.0 <= by_name["ret"]["main"] <= 1.0 and -1.0 <= by_name["sts"]["main"] <= 1.0
    assert res["id_mean"] == pytest.approx(by_name["sts"]["main"])
    assert res["ood_mean"] == pytest.approx((by_name["ret"]["main"] + by_name["clu"]["main"]) / 2)


def test_boom_eval_broken_suite_is_a_clear_error(tmp_path, kit, minilm_path, capsys):
    ret = kit.make_retrieval_suite(tmp_path / "ret")
    (ret / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tghost\t1\n")
    assert boom(["eval", "--model", str(minilm_path), "--suite", str(ret)]) == 2
    err = capsys.readouterr().err
    assert "test.tsv: corpus-id 'ghost'" in err and "Traceback" not in err


def test_embed_input_kind_from_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from boom_ray.eval.embed_files import EmbedInputError, input_format as _input_format
    from boom_ray.runtime.storage import resolve

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"_id": ["a"], "text": ["x"]}), folder / "sub" / "part-0.parquet")
    (folder / "_SUCCESS").write_text("")
    fs, path = resolve(str(folder))
    assert _input_format(fs, path) == "parquet"
    (folder / "extra.jsonl").write_text("{}\n")
    with pytest.raises(EmbedInputError, match="one kind"):
        _input_format(fs, path)
    with pytest.raises(EmbedInputError, match="input not found"):
        _input_format(fs, str(tmp_path / "nope"))
