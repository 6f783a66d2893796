"""Evaluation suites read from disk (formats in DESIGN.md), validated up front.

A suite is metadata (name, type, instruction, domain) plus its texts. Every problem with the
files is a :class:`SuiteError` naming the file (and line), raised before any model is loaded,
because finding a typo in qrels after an hour of corpus embedding is the failure to avoid.

Layouts:
- retrieval (BEIR): ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text),
  ``qrels/test.tsv`` (query-id, corpus-id, score; with header), or ``qrels/dev.tsv``.
- sts: ``test.jsonl`` (sentence1, sentence2, score).
- classification: ``train.jsonl`` and ``test.jsonl`` (text, label).
- clustering: ``test.jsonl`` (text, label).
- optional ``suite.json``: {"type", "instruction", "domain": "in" | "out"}; retrieval when absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from boom_ray.errors import BoomError
from boom_ray.runtime import storage

SuiteType = Literal["retrieval", "sts", "classification", "clustering"]
SUITE_TYPES: tuple[str, ...] = ("retrieval", "sts", "classification", "clustering")
DEFAULT_DOMAIN = "out"
"""Domain of a suite that neither suite.json nor the caller tags: data not known to come from the
training distribution is treated as held out."""


class SuiteError(BoomError):
    """A suite directory that cannot be evaluated; the message names the file and line."""


@dataclass
class Suite:
    name: str
    path: str
    type: SuiteType
    domain: Literal["in", "out"]
    instruction: str | None


@dataclass
class RetrievalSuite(Suite):
    corpus_ids: list[str] = field(default_factory=list)
    corpus_texts: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)
    query_texts: list[str] = field(default_factory=list)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    """query id -> {corpus id: graded relevance}; only queries named here are evaluated."""


@dataclass
class STSSuite(Suite):
    """Sentence pairs with a gold similarity score, scored by the Spearman correlation of cosines."""

    sentences1: list[str] = field(default_factory=list)
    sentences2: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass
class ClassificationSuite(Suite):
    """Labelled texts: a logistic regression fitted on the train embeddings is scored on the test
    ones (accuracy, macro-F1)."""

    train_texts: list[str] = field(default_factory=list)
    train_labels: list[Any] = field(default_factory=list)
    test_texts: list[str] = field(default_factory=list)
    test_labels: list[Any] = field(default_factory=list)


@dataclass
class ClusteringSuite(Suite):
    """Labelled texts that k-means with one cluster per label should group (V-measure)."""

    texts: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; a bad line is an error naming file:line."""
    if not path.is_file():
        raise SuiteError(f"{path}: file not found")
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise SuiteError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _field(obj: dict[str, Any], key: str, path: Path, lineno: int, kind: type | tuple[type, ...]) -> Any:
    if key not in obj or obj[key] is None:
        raise SuiteError(f"{path}:{lineno}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SuiteError(f"{path}:{lineno}: field {key!r} must be {want}, got {type(value).__name__}")
    return value


def _id(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    return str(_field(obj, key, path, lineno, (str, int)))


def _nonempty(items: list[Any], path: Path) -> None:
    if not items:
        raise SuiteError(f"{path}: no rows")


def read_suite_json(root: Path) -> dict[str, Any]:
    path = root / "suite.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise SuiteError(f"{path}: expected a JSON object")
    kind = str(meta.get("type", "retrieval")).lower()
    if kind not in SUITE_TYPES:
        raise SuiteError(f"{path}: unknown type {meta.get('type')!r}; expected one of {', '.join(SUITE_TYPES)}")
    domain = meta.get("domain")
    if domain is not None and domain not in ("in", "out"):
        raise SuiteError(f"{path}: domain must be 'in' or 'out', got {domain!r}")
    instruction = meta.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise SuiteError(f"{path}: instruction must be a string")
    return {"type": kind, "domain": domain, "instruction": instruction or None}


def _read_qrels(root: Path, split: str | None) -> tuple[Path, dict[str, dict[str, int]]]:
    names = [split] if split else ["test", "dev"]
    candidates = [root / "qrels" / f"{n}.tsv" for n in names]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SuiteError(f"{candidates[0]}: file not found (a retrieval suite needs qrels/test.tsv or qrels/dev.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                raise SuiteError(f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score)")
            try:
                score = int(float(cols[2]))
            except ValueError:
                if lineno == 1:  # the header
                    continue
                raise SuiteError(f"{path}:{lineno}: score {cols[2]!r} is not a number") from None
            qrels.setdefault(cols[0].strip(), {})[cols[1].strip()] = score
    if not qrels:
        raise SuiteError(f"{path}: no relevance judgements")
    return path, qrels


def _read_retrieval(base: dict[str, Any], root: Path, split: str | None) -> RetrievalSuite:
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    corpus_ids, corpus_texts, seen = [], [], set()
    for lineno, obj in iter_jsonl(corpus_path):
        doc_id = _id(obj, "_id", corpus_path, lineno)
        if doc_id in seen:
            raise SuiteError(f"{corpus_path}:{lineno}: duplicate _id {doc_id!r}")
        seen.add(doc_id)
        text = _field(obj, "text", corpus_path, lineno, str)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise SuiteError(f"{corpus_path}:{lineno}: field 'title' must be str")
        corpus_ids.append(doc_id)
        corpus_texts.append(f"{title} {text}".strip() if title else text)  # BEIR's convention
    if not corpus_ids:
        raise SuiteError(f"{corpus_path}: empty corpus")
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(queries_path):
        queries[_id(obj, "_id", queries_path, lineno)] = _field(obj, "text", queries_path, lineno, str)
    _nonempty(list(queries), queries_path)
    qrels_path, qrels = _read_qrels(root, split)
    for qid, docs in qrels.items():
        if qid not in queries:
            raise SuiteError(f"{qrels_path}: query-id {qid!r} is not in {queries_path.name}")
        for did in docs:
            if did not in seen:
                raise SuiteError(f"{qrels_path}: corpus-id {did!r} (query {qid!r}) is not in {corpus_path.name}")
    judged = [q for q in queries if q in qrels]
    return RetrievalSuite(**base, corpus_ids=corpus_ids, corpus_texts=corpus_texts, query_ids=judged,
                          query_texts=[queries[q] for q in judged], qrels=qrels)


def _read_sts(base: dict[str, Any], root: Path) -> STSSuite:
    path = root / "test.jsonl"
    s1, s2, scores = [], [], []
    for lineno, obj in iter_jsonl(path):
        s1.append(_field(obj, "sentence1", path, lineno, str))
        s2.append(_field(obj, "sentence2", path, lineno, str))
        scores.append(float(_field(obj, "score", path, lineno, (int, float))))
    _nonempty(scores, path)
    return STSSuite(**base, sentences1=s1, sentences2=s2, scores=scores)


def _read_labelled(path: Path) -> tuple[list[str], list[Any]]:
    texts, labels = [], []
    for lineno, obj in iter_jsonl(path):
        texts.append(_field(obj, "text", path, lineno, str))
        labels.append(_field(obj, "label", path, lineno, (str, int)))
    _nonempty(texts, path)
    return texts, labels


def _read_classification(base: dict[str, Any], root: Path) -> ClassificationSuite:
    train_texts, train_labels = _read_labelled(root / "train.jsonl")
    test_texts, test_labels = _read_labelled(root / "test.jsonl")
    if len(set(train_labels)) < 2:
        raise SuiteError(f"{root / 'train.jsonl'}: a classifier needs at least 2 distinct labels")
    return ClassificationSuite(**base, train_texts=train_texts, train_labels=train_labels,
                               test_texts=test_texts, test_labels=test_labels)


def _read_clustering(base: dict[str, Any], root: Path) -> ClusteringSuite:
    path = root / "test.jsonl"
    texts, labels = _read_labelled(path)
    if len(set(labels)) > len(texts):
        raise SuiteError(f"{path}: more labels than texts")
    return ClusteringSuite(**base, texts=texts, labels=labels)


def load_suite(path: str | os.PathLike[str], *, domain: str | None = None, instruction: str | None = None,
               default_domain: str | None = None, default_instruction: str | None = None,
               split: str | None = None) -> Suite:
    """Read and validate one suite directory.

    `domain` / `instruction` override suite.json (a SuiteRef in the run config); `default_domain` /
    `default_instruction` only fill what suite.json leaves out (the CLI flags)."""
    if "://" in str(path):  # on object storage: read a local copy (cached per node), named as the URI
        name = str(path).rstrip("/").rsplit("/", 1)[-1]
        try:
            root = Path(storage.local_dir(str(path)))
        except FileNotFoundError:
            raise SuiteError(f"{path}: suite directory not found") from None
    else:
        root = Path(path)
        if not root.is_dir():
            raise SuiteError(f"{root}: suite directory not found")
        name = root.resolve().name
    meta = read_suite_json(root)
    base = {
        "name": name,
        "path": str(path),
        "type": meta.get("type", "retrieval"),
        "domain": domain or meta.get("domain") or default_domain or DEFAULT_DOMAIN,
        "instruction": instruction or meta.get("instruction") or default_instruction,
    }
    if base["domain"] not in ("in", "out"):
        raise SuiteError(f"{path}: domain must be 'in' or 'out', got {base['domain']!r}")
    kind = base["type"]
    if kind == "retrieval":
        return _read_retrieval(base, root, split)
    if kind == "sts":
        return _read_sts(base, root)
    if kind == "classification":
        return _read_classification(base, root)
    return _read_clustering(base, root)
