"""The mteb encoder adapter, offline: mteb's own in-memory mock tasks run through mteb.evaluate."""

from __future__ import annotations

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask  # noqa: E402
from mteb.mocks.mock_tasks.sts import MockSTSTask  # noqa: E402
from mteb.models.models_protocols import EncoderProtocol  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from boom_ray.eval import metrics  # noqa: E402
from boom_ray.eval.mteb_adapter import MtebEncoder  # noqa: E402


def test_mteb_evaluate_with_adapter(minilm_path):
    enc = MtebEncoder(str(minilm_path), batch_size=8, instructions={"Retrieval": "find the doc"})
    assert isinstance(enc, EncoderProtocol)
    sts, ret = MockSTSTask(), MockRetrievalTask()
    result = mteb.evaluate(enc, [sts, ret], cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in result.task_results}
    # Same number as boom-ray's own STS evaluator on the same texts and model.
    sts.load_data()
    data = sts.dataset["test"]
    e1 = enc.model.encode(list(data["sentence1"]))
    e2 = enc.model.encode(list(data["sentence2"]))
    own = metrics.sts_metrics(e1, e2, list(data["score"]))["spearman"]
    assert scores["MockSTSTask"] == pytest.approx(own, abs=1e-6)
    assert 0.0 <= scores["MockRetrievalTask"] <= 1.0


def test_prompt_convention(minilm_path):
    enc = MtebEncoder(str(minilm_path), instructions={"Retrieval": "find the doc"})
    meta = MockRetrievalTask().metadata
    assert enc.texts_for(["q"], meta, PromptType.query) == ["Instruct: find the doc\nQuery: q"]
    assert enc.texts_for(["d"], meta, PromptType.document) == ["d"]
    vec = enc.encode([{"text": ["a b", "c"]}], task_metadata=meta, hf_split="test", hf_subset="default",
                     prompt_type=PromptType.document)
    np.testing.assert_allclose(vec, enc.model.encode(["a b", "c"]), atol=1e-6)


def test_model_without_a_prompt_gets_queries_as_they_are(minilm_path):
    enc = MtebEncoder(str(minilm_path))  # all-MiniLM-L6-v2 declares no prompt; no instruction given
    meta = MockRetrievalTask().metadata
    meta = meta.model_copy(update={"prompt": None})
    assert enc.texts_for(["q"], meta, PromptType.query) == ["q"]
