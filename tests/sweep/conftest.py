"""Sweep fixtures: two tiny Qwen3 bag exports and a tiny out-of-domain retrieval dev suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS = {
    "d1": "the cat sat on the warm mat", "d2": "stock markets fell sharply today",
    "d3": "a recipe for fresh tomato soup", "d4": "the football team won the final match",
    "d5": "rain is expected over the mountains", "d6": "new phones have better cameras",
}
QUERIES = {"q1": ("where did the cat sit", "d1"), "q2": ("how did the markets do", "d2"),
           "q3": ("how to cook soup", "d3"), "q4": ("who won the match", "d4")}


def write_suite(root: Path) -> Path:
    """A retrieval suite in the DESIGN.md (BEIR) layout, tagged out-of-domain."""
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                               for i, t in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, (t, _) in QUERIES.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items()))
    (root / "suite.json").write_text(json.dumps({"type": "retrieval", "domain": "out"}))
    return root


@pytest.fixture(scope="module")
def bag_models(tiny_qwen3_path, tmp_path_factory) -> Path:
    """A work dir whose models/bag50 and models/bag100 are the tiny Qwen3 with perturbed weights,
    saved in the sentence-transformers export format the train stage writes."""
    return _perturbed_bags(tiny_qwen3_path, tmp_path_factory.mktemp("sweep_run"), None)


@pytest.fixture(scope="session")
def bf16_bag_models(tiny_qwen3_path, tmp_path_factory) -> Path:
    """The same bags stored in bfloat16, as the reference job's bags are (their multislerp and
    linear merges take the fused kernels)."""
    import torch  # lazy: torch, for the tests that use these bags

    return _perturbed_bags(tiny_qwen3_path, tmp_path_factory.mktemp("sweep_run_bf16"), torch.bfloat16)


def _perturbed_bags(tiny_qwen3_path, workdir: Path, dtype) -> Path:
    import torch  # lazy: torch, for the tests that use these bags

    from boom_ray.model.embedder import Embedder  # lazy: torch, transformers

    embedder = Embedder.from_pretrained(str(tiny_qwen3_path))
    state = {k: v.detach().clone() for k, v in embedder.model.state_dict().items()}
    for seed, bag in enumerate(["bag50", "bag100"]):
        gen = torch.Generator().manual_seed(seed)
        perturbed = {k: v + 0.5 * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen)
                     if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
        if dtype is not None:
            perturbed = {k: v.to(dtype) if v.is_floating_point() else v for k, v in perturbed.items()}
        embedder.save(workdir / "models" / bag, state_dict=perturbed)
    return workdir
