"""Toy suites written to disk and a fixed encoder (a lookup table) for hand-checked scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest


class TableEncoder:
    """encode(texts, prompt) from a text -> vector table; records every text it was asked for."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.seen: list[str] = []

    def __call__(self, texts, prompt=None) -> np.ndarray:
        texts = [(prompt or "") + t for t in texts]
        self.seen.extend(texts)
        return np.asarray([self.table[t] for t in texts], dtype=np.float32)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_retrieval_suite(root: Path, meta: dict | None = None) -> Path:
    write_jsonl(root / "corpus.jsonl", [
        {"_id": "d1", "title": "", "text": "alpha"}, {"_id": "d2", "title": "T", "text": "beta"},
        {"_id": "d3", "text": "gamma"}, {"_id": "d4", "title": "", "text": "delta"}])
    write_jsonl(root / "queries.jsonl", [
        {"_id": "q1", "text": "east"}, {"_id": "q2", "text": "north"}, {"_id": "q3", "text": "void"},
        {"_id": "q4", "text": "unjudged"}])
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td3\t2\nq2\td4\t1\nq3\td1\t0\n")
    if meta is not None:
        (root / "suite.json").write_text(json.dumps(meta))
    return root


def make_sts_suite(root: Path, meta: dict | None = None) -> Path:
    write_jsonl(root / "test.jsonl", [
        {"sentence1": "a1", "sentence2": "a2", "score": 5},
        {"sentence1": "b1", "sentence2": "b2", "score": 3.0},
        {"sentence1": "c1", "sentence2": "c2", "score": 4}])
    (root / "suite.json").write_text(json.dumps({"type": "sts", **(meta or {})}))
    return root


def make_text_suite(root: Path, kind: str, train: list[tuple[str, str]] | None,
                    test: list[tuple[str, str]], meta: dict | None = None) -> Path:
    if train is not None:
        write_jsonl(root / "train.jsonl", [{"text": t, "label": l} for t, l in train])
    write_jsonl(root / "test.jsonl", [{"text": t, "label": l} for t, l in test])
    (root / "suite.json").write_text(json.dumps({"type": kind, **(meta or {})}))
    return root


@pytest.fixture
def kit():
    """This module's helpers (tests cannot import a conftest under --import-mode=importlib)."""
    return sys.modules[__name__]
