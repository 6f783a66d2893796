"""eval.dims: a suite scored at a truncated size equals the suite scored with embeddings cut to
that size and renormalised (computed here independently), and the model embeds it only once."""

from __future__ import annotations

import numpy as np
import pytest

from boom_ray.eval.evaluators import evaluate_suite
from boom_ray.eval.results import summarize
from boom_ray.eval.suites import load_suite
from boom_ray.eval.truncation import RecordingEncoder, TruncatedEncoder, truncate_rows

TABLE = {"alpha": [1, 0, 0.5], "T beta": [0.8, 0.6, -2], "gamma": [0.1, 1, 0], "delta": [-1, 0, 3],
         "Instruct: find\nQuery: east": [1, 0.2, 1], "Instruct: find\nQuery: north": [0.3, 1, -1],
         "Instruct: find\nQuery: void": [1, 1, 0]}


def test_truncate_rows_cuts_and_renormalises():
    out = truncate_rows(np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]), 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    with pytest.raises(ValueError, match="cannot truncate"):
        truncate_rows(np.zeros((1, 2)), 3)


@pytest.mark.parametrize("dim", [1, 2])
def test_truncated_score_equals_the_score_of_cut_embeddings(tmp_path, kit, dim):
    suite = load_suite(kit.make_retrieval_suite(tmp_path / "ret", {"instruction": "find", "domain": "in"}))
    enc = kit.TableEncoder(TABLE)
    recorded = RecordingEncoder(enc)
    full = evaluate_suite(suite, recorded)
    calls = len(enc.seen)
    got = evaluate_suite(suite, TruncatedEncoder(recorded, dim))
    assert len(enc.seen) == calls  # replayed, not embedded again
    cut = {text: truncate_rows(np.array([v], dtype=np.float32), dim)[0].tolist() for text, v in TABLE.items()}
    expected = evaluate_suite(suite, kit.TableEncoder(cut))
    assert got["metrics"] == pytest.approx(expected["metrics"])
    assert full["metrics"] == evaluate_suite(suite, kit.TableEncoder(TABLE))["metrics"]
    if dim == 1:
        assert got["main"] != pytest.approx(full["main"])  # the cut really changes the ranking


def test_summary_has_means_per_dim():
    suites = [{"name": "a", "domain": "in", "main": 0.5, "dims": {"64": {"main": 0.3}, "128": {"main": 0.4}}},
              {"name": "b", "domain": "out", "main": 0.7, "dims": {"64": {"main": 0.1}, "128": {"main": 0.6}}}]
    out = summarize("m", suites)
    assert list(out["by_dim"]) == ["64", "128"]
    assert out["by_dim"]["64"] == pytest.approx({"id_mean": 0.3, "ood_mean": 0.1, "mean": 0.2})
    assert "by_dim" not in summarize("m", [{"name": "a", "domain": "in", "main": 0.5}])
