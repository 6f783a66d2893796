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


def test_retrieval_corpus_streams_through_ray_pool(ray_session, minilm_path, tmp_path, kit):
    """A corpus at or above eval.ray_min_texts is embedded by the Ray Data actor pool, block by block,
    and scored as it streams: same vectors and same scores as in-process embedding."""
    from boom_ray.eval.evaluate import evaluate_model

    blocks = []

    class Tap(ModelEncoder):  # the real encoder, recording what its stream yields
        def stream(self, texts, prompt=None, **kw):
            for rows, vectors in super().stream(texts, prompt, **kw):
                blocks.append((rows, vectors))
                yield rows, vectors

    root = kit.make_retrieval_suite(tmp_path / "ret", {"instruction": "find"})
    kit.write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    (root / "qrels" / "test.tsv").write_text("q\tc\ts\nq1\td1\t1\nq1\td3\t1\nq2\td4\t2\nq3\td10\t1\n")
    big = EvalConfig(batch_size=16, encoder_cpus=0.5, ray_min_texts=50)  # 90 docs: Ray; 3 queries: local
    tap = Tap(str(minilm_path), big)
    from boom_ray.eval.evaluators import evaluate_suite
    from boom_ray.eval.suites import load_suite

    suite = load_suite(root)
    via_ray = evaluate_suite(suite, tap)["metrics"]
    assert len(blocks) > 1  # several blocks, so they spread over the actors of a bigger pool
    rows = np.concatenate([r for r, _ in blocks])
    assert sorted(rows.tolist()) == list(range(len(TEXTS)))
    streamed = np.empty((len(TEXTS), 384), dtype=np.float32)
    streamed[rows] = np.concatenate([v for _, v in blocks])
    local_enc = ModelEncoder(str(minilm_path), EvalConfig(batch_size=16, ray_min_texts=10**9))
    np.testing.assert_allclose(streamed, local_enc(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(streamed, axis=1), 1.0, atol=1e-5)
    local = evaluate_model(str(minilm_path), [suite], local_enc.eval_cfg)["suites"][0]["metrics"]
    assert via_ray == pytest.approx(local, abs=1e-6)
