"""Scoring a suite at truncated embedding sizes (`eval.dims`, Matryoshka models).

A truncated score takes the first d coordinates of each embedding and renormalises them, which is
what ``SentenceTransformer(path, truncate_dim=d)`` followed by cosine similarity gives. The suite
is embedded once: :class:`RecordingEncoder` keeps what the full-size evaluation embedded (one
suite at a time, so memory is one suite's embeddings, only when `eval.dims` is set) and
:class:`TruncatedEncoder` replays it cut to d dimensions, so each extra size costs only the
metric computation, not another pass of the model.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

import numpy as np


def truncate_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """First `dim` coordinates of each row, L2-renormalised (rows of zeros stay zero)."""
    if not 0 < dim <= vectors.shape[1]:
        raise ValueError(f"eval.dims: cannot truncate {vectors.shape[1]}-dimensional embeddings to {dim}")
    cut = np.asarray(vectors[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms > 0, norms, 1.0)


def _key(texts: Sequence[str], prompt: str | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(prompt).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


class RecordingEncoder:
    """Passes every call through to `encoder` and records the results (for TruncatedEncoder)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.calls: dict[str, np.ndarray] = {}
        self.streams: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        if hasattr(encoder, "format_query"):
            self.format_query = encoder.format_query

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        out = np.asarray(self.encoder(texts, prompt))
        self.calls[_key(texts, prompt)] = out
        return out

    def stream(self, texts: Sequence[str], prompt: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunks = self.streams.setdefault(_key(texts, prompt), [])
        source = self.encoder.stream(texts, prompt) if hasattr(self.encoder, "stream") else \
            iter([(np.arange(len(texts)), np.asarray(self.encoder(list(texts), prompt)))])
        for rows, vectors in source:
            chunks.append((rows, vectors))
            yield rows, vectors


class TruncatedEncoder:
    """Replays a RecordingEncoder's embeddings truncated to `dim` (and renormalised)."""

    def __init__(self, recorded: RecordingEncoder, dim: int):
        self.recorded, self.dim = recorded, dim
        if hasattr(recorded, "format_query"):
            self.format_query = recorded.format_query

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        key = _key(texts, prompt)
        vectors = self.recorded.calls.get(key)
        if vectors is None:
            vectors = self.recorded(texts, prompt)
        return truncate_rows(vectors, self.dim)

    def stream(self, texts: Sequence[str], prompt: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunks = self.recorded.streams.get(_key(texts, prompt))
        for rows, vectors in chunks if chunks is not None else self.recorded.stream(texts, prompt):
            yield rows, truncate_rows(vectors, self.dim)
