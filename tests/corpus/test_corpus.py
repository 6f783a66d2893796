"""Row validation: every reason, the Arrow fast path agreeing with the per-line reference,
line numbers kept, and Parquet input."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from boom_ray.corpus.reader import CorpusError, discover, fingerprint, iter_chunks, row_problem

GOOD = {"query": "what is a cat", "pos": ["a small feline"], "neg": ["a dog", "a car"]}

BAD_ROWS = [
    ([1, 2], "not_object"),
    ({"pos": ["x"], "neg": []}, "missing_query"),
    ({"query": 5, "pos": ["x"], "neg": []}, "bad_type:query"),
    ({"query": "  ", "pos": ["x"], "neg": []}, "empty_query"),
    ({"query": "q", "neg": []}, "missing_pos"),
    ({"query": "q", "pos": "x", "neg": []}, "bad_type:pos"),
    ({"query": "q", "pos": [], "neg": []}, "empty_pos"),
    ({"query": "q", "pos": ["x", 3], "neg": []}, "bad_type:pos"),
    ({"query": "q", "pos": [""], "neg": []}, "empty_string:pos"),
    ({"query": "q", "pos": ["x"]}, "missing_neg"),
    ({"query": "q", "pos": ["x"], "neg": "n"}, "bad_type:neg"),
    ({"query": "q", "pos": ["x"], "neg": ["n", None]}, "bad_type:neg"),
    ({"query": "q", "pos": ["x"], "neg": [" "]}, "empty_string:neg"),
    ({"query": "q", "pos": ["x"], "neg": [], "prompt": 1}, "bad_type:prompt"),
    ({"query": "q", "pos": ["x"], "neg": [], "prompt": ""}, "empty_string:prompt"),
    ({"query": "q", "pos": ["x"], "neg": [], "type": ["a"]}, "bad_type:type"),
]


@pytest.mark.parametrize("row,reason", BAD_ROWS)
def test_row_problem_names_the_reason(row, reason):
    assert row_problem(row) == reason


def test_valid_rows_pass():
    assert row_problem(GOOD) is None
    assert row_problem({**GOOD, "neg": [], "prompt": "Retrieve", "type": "symmetric_sts"}) is None


def _write_jsonl(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("chunk_rows", [16, 3, 1000])
def test_bad_rows_are_found_with_their_line_numbers(tmp_path, chunk_rows):
    lines = [json.dumps({**GOOD, "query": f"q{i}"}) for i in range(40)]
    planted = {5: "{not json", 12: json.dumps(BAD_ROWS[3][0]), 13: "", 30: json.dumps(BAD_ROWS[7][0])}
    for index, text in planted.items():
        lines[index] = text
    _write_jsonl(tmp_path / "c" / "t.jsonl", lines)
    fs, files = discover(str(tmp_path / "c"))
    chunks = list(iter_chunks(fs, files[0], chunk_rows))
    bad = [row for c in chunks for row in c.bad]
    assert [(b["line"], b["reason"]) for b in bad] == [(6, "invalid_json"), (13, "empty_query"),
                                                       (31, "bad_type:pos")]
    assert bad[0]["raw"] == "{not json" and bad[0]["source"] == "t.jsonl"
    valid = pa.concat_tables(c.valid for c in chunks)
    # 40 lines, one blank (skipped, not a row), three bad
    assert valid.num_rows == 36
    assert 14 not in valid["line"].to_pylist() and valid["line"].to_pylist()[0] == 1
    assert set(valid["task"].to_pylist()) == {"t"}
    assert valid["query"][0].as_py() == "q0"


def test_fast_path_and_reference_agree_on_a_clean_chunk(tmp_path):
    rows = [{**GOOD, "query": f"q{i}", "prompt": "p" if i % 2 else None, "type": "retrieval"} for i in range(50)]
    _write_jsonl(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    fs, files = discover(str(tmp_path))
    (chunk,) = list(iter_chunks(fs, files[0], 100))
    assert chunk.bad == []
    got = chunk.valid.select(["query", "pos", "neg", "prompt", "type"]).to_pylist()
    assert got == [{k: r.get(k) for k in ["query", "pos", "neg", "prompt", "type"]} for r in rows]


def test_parquet_input_is_validated_per_row(tmp_path):
    rows = [{**GOOD, "query": "q1"}, {**GOOD, "query": ""}, {**GOOD, "query": "q3", "pos": []}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "task.parquet")
    fs, files = discover(str(tmp_path))
    chunks = list(iter_chunks(fs, files[0], 10))
    assert [(b["line"], b["reason"]) for c in chunks for b in c.bad] == [(2, "empty_query"), (3, "empty_pos")]
    assert sum(c.valid.num_rows for c in chunks) == 1


def test_discover_names_tasks_by_relative_path(tmp_path):
    _write_jsonl(tmp_path / "retrieval" / "msmarco.jsonl", [json.dumps(GOOD)])
    _write_jsonl(tmp_path / "nli.jsonl", [json.dumps(GOOD)])
    _write_jsonl(tmp_path / ".hidden" / "x.jsonl", [json.dumps(GOOD)])
    (tmp_path / "notes.txt").write_text("ignored")
    fs, files = discover(str(tmp_path))
    assert [f.task for f in files] == ["nli", "retrieval/msmarco"]
    before = fingerprint(fs, files)
    os.utime(tmp_path / "nli.jsonl", (0, 0))  # a copy or an unpacked upload: new mtime, same data
    assert fingerprint(fs, discover(str(tmp_path))[1]) == before
    _write_jsonl(tmp_path / "nli.jsonl", [json.dumps({**GOOD, "query": "what is a dog"})])
    assert fingerprint(fs, discover(str(tmp_path))[1]) != before


def test_discover_errors_name_the_problem(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        discover(str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="no .jsonl or .parquet files"):
        discover(str(tmp_path))
    _write_jsonl(tmp_path / "a.jsonl", [json.dumps(GOOD)])
    pq.write_table(pa.Table.from_pylist([GOOD]), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match="task 'a' has two files"):
        discover(str(tmp_path))
