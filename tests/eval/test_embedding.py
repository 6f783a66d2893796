"""The Ray Data encoder pool on the real MiniLM: same vectors as in-process, `boom embed` to Parquet."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from boom_ray.cli import main as boom
from boom_ray.config import EvalConfig
from boom_ray.eval.embedding import ModelEncoder

TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market and interest rates'}" for i in range(90)]


def test_ray_data_pool_matches_in_process(ray_session, minilm_path):
    cfg = EvalConfig(batch_size=16, num_encoders=1, encoder_cpus=0.5, ray_min_texts=0)
    ray_enc = ModelEncoder(str(minilm_path), cfg)
    streamed = list(ray_enc.stream(TEXTS))
    assert len(streamed) > 1  # several blocks, so they can spread over actors
    rows = np.concatenate([r for r, _ in streamed])
    assert sorted(rows.tolist()) == list(range(len(TEXTS)))
    via_ray = np.empty((len(TEXTS), 384), dtype=np.float32)
    via_ray[rows] = np.concatenate([v for _, v in streamed])
    local = ModelEncoder(str(minilm_path), EvalConfig(batch_size=16, ray_min_texts=10**9))(TEXTS)
    assert via_ray.shape == (90, 384)
    np.testing.assert_allclose(via_ray, local, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(via_ray, axis=1), 1.0, atol=1e-5)


def test_boom_embed_jsonl_to_parquet(ray_session, minilm_path, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"_id": f"d{i}", "text": t, "extra": i}) + "\n" for i, t in enumerate(TEXTS[:20])))
    out = tmp_path / "vectors"
    assert boom(["embed", "--model", str(minilm_path), "--input", str(src), "--output", str(out),
                 "--batch-size", "8", "--encoder-cpus", "0.5"]) == 0
    table = pq.read_table(out)
    assert set(table.column_names) == {"_id", "vector"}
    got = dict(zip(table.column("_id").to_pylist(), np.asarray(table.column("vector").to_pylist(), dtype=np.float32)))
    assert sorted(got) == sorted(f"d{i}" for i in range(20))
    want = ModelEncoder(str(minilm_path), EvalConfig(ray_min_texts=10**9))(TEXTS[:20])
    np.testing.assert_allclose(np.stack([got[f"d{i}"] for i in range(20)]), want, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # staging folder renamed away
    # an existing output is never overwritten; a missing column is named
    assert boom(["embed", "--model", str(minilm_path), "--input", str(src), "--output", str(out)]) == 2


def test_boom_embed_names_missing_column(ray_session, minilm_path, tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "a", "body": "x"}) + "\n")
    assert boom(["embed", "--model", str(minilm_path), "--input", str(src), "--output", str(tmp_path / "o")]) == 2
    assert "no column '_id'" in capsys.readouterr().err
