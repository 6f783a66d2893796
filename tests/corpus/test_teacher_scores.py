"""Teacher scores (pos_scores / neg_scores) are kept and validated: one finite number per
passage, else the row is quarantined with its reason; the column-wise fast path and the
row-by-row reference `row_problem` agree on every row (property test)."""

from __future__ import annotations

import io
import json
import math

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boom_ray.corpus import reader as corpus
from boom_ray.corpus.reader import ROW_SCHEMA, SourceFile, discover, iter_chunks, row_problem

ROW = {"query": "q", "pos": ["p1", "p2"], "neg": ["n1"]}
SRC = SourceFile("t.jsonl", "t.jsonl", "t", "jsonl", 0)


@pytest.mark.parametrize("extra,reason", [
    ({"pos_scores": [0.9, 0.8], "neg_scores": [0.1]}, None),
    ({"pos_scores": [1, 2]}, None),  # ints are numbers; neg_scores may be absent
    ({"pos_scores": None, "neg_scores": None}, None),
    ({"pos_scores": [0.9]}, "length_mismatch:pos_scores"),
    ({"neg_scores": [0.1, 0.2]}, "length_mismatch:neg_scores"),
    ({"pos_scores": 0.9}, "bad_type:pos_scores"),
    ({"pos_scores": ["0.9", 0.8]}, "bad_type:pos_scores"),
    ({"pos_scores": [True, 0.8]}, "bad_type:pos_scores"),
    ({"neg_scores": [None]}, "bad_type:neg_scores"),
    ({"pos_scores": [0.5, math.nan]}, "non_finite:pos_scores"),
    ({"neg_scores": [math.inf]}, "non_finite:neg_scores"),
])
def test_each_reason(extra, reason):
    assert row_problem({**ROW, **extra}) == reason


def _scores(n):
    number = st.one_of(st.floats(-5, 5, allow_nan=False), st.integers(-3, 3))
    bad = st.one_of(st.just(math.nan), st.just(math.inf), st.just("0.5"), st.just(True), st.none())
    return st.one_of(
        st.none(), st.just("absent"), st.just(1.0),
        st.lists(number, min_size=n, max_size=n),
        st.lists(number, min_size=0, max_size=n + 2),
        st.lists(st.one_of(number, bad), min_size=n, max_size=n))


@st.composite
def rows(draw):
    row = {"query": "q", "pos": ["a", "b"][:draw(st.integers(1, 2))], "neg": ["x", "y", "z"][:draw(st.integers(0, 3))]}
    for name, passages in corpus.SCORE_COLUMNS.items():
        value = draw(_scores(len(row[passages])))
        if value != "absent":
            row[name] = value
    return row


@given(batch=st.lists(rows(), min_size=1, max_size=6))
@settings(max_examples=150, deadline=None)
def test_fast_path_agrees_with_row_problem(batch):
    lines = [json.dumps(r).encode() for r in batch]
    expected = [row_problem(json.loads(line)) for line in lines]
    try:  # the fast path, where Arrow can type the chunk at all
        parsed = pajson.read_json(io.BytesIO(b"\n".join(lines)), parse_options=pajson.ParseOptions(
            explicit_schema=ROW_SCHEMA, unexpected_field_behavior="ignore"))
    except pa.ArrowInvalid:
        parsed = None
    if parsed is not None and parsed.num_rows == len(lines):
        assert corpus._all_valid(parsed) == all(e is None for e in expected)
    chunk = corpus._jsonl_chunk(SRC, lines, list(range(1, len(lines) + 1)))
    assert [b["reason"] for b in chunk.bad] == [e for e in expected if e is not None]
    kept = [json.loads(line) for line, e in zip(lines, expected) if e is None]
    assert chunk.valid["pos_scores"].to_pylist() == [r.get("pos_scores") and [float(x) for x in r["pos_scores"]]
                                                     for r in kept]


def test_scores_survive_into_the_bag_columns_from_jsonl_and_parquet(tmp_path):
    good = {**ROW, "pos_scores": [0.9, 0.7], "neg_scores": [0.2]}
    (tmp_path / "a.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**ROW, "pos_scores": [1.0]}) + "\n")
    pq.write_table(pa.Table.from_pylist([good, {**good, "neg_scores": [1.0, 2.0]}]), tmp_path / "b.parquet")
    fs, files = discover(str(tmp_path))
    for src, reason in zip(files, ["length_mismatch:pos_scores", "length_mismatch:neg_scores"]):
        (chunk,) = list(iter_chunks(fs, src, 10))
        assert [b["reason"] for b in chunk.bad] == [reason]
        assert chunk.valid.select(["pos_scores", "neg_scores"]).to_pylist() == [
            {"pos_scores": [0.9, 0.7], "neg_scores": [0.2]}]
