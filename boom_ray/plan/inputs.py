"""What `boom plan` reads: a model's shape, the rows of each bag, and cluster.yaml's node types.

Nothing is downloaded and nothing heavy is imported (no torch, no transformers, no Ray): a
model's shape comes from its config.json (a local folder, the bundled MiniLM's folder, or
``--model-config``), else from KNOWN_MODELS for the hub ids the shipped configs name, because a
hub id cannot be resolved offline. Row counts come from the bag manifests where the bags exist,
else from the corpus itself (lines of JSONL, Parquet metadata), sampled the way the bag stage
samples (round(ratio x rows) per task).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import yaml

from boom_ray.config import BoomConfig, bag_name
from boom_ray.corpus.bags import bag_dir, read_manifest
from boom_ray.corpus.reader import discover
from boom_ray.corpus.sampling import sample_size
from boom_ray.errors import BoomError
from boom_ray.model.settings import resolve_model_path
from boom_ray.plan.estimate import ModelShape, NodeType
from boom_ray.runtime.cluster import ClusterError, node_types


class PlanError(BoomError):
    """A plan that cannot be made; the message names the config key or flag to change."""


def _qwen3(name: str, hidden: int, layers: int, intermediate: int, heads: int, tie: bool) -> ModelShape:
    return ModelShape(name, "decoder", hidden, layers, intermediate, heads, 8, 128, 151936, tie, 40960)


KNOWN_MODELS: dict[str, ModelShape] = {m.name: m for m in (
    _qwen3("Qwen/Qwen3-0.6B", 1024, 28, 3072, 16, True),
    _qwen3("Qwen/Qwen3-1.7B", 2048, 28, 6144, 16, True),
    _qwen3("Qwen/Qwen3-4B", 2560, 36, 9728, 32, True),
    _qwen3("Qwen/Qwen3-8B", 4096, 36, 12288, 32, False),
    _qwen3("Qwen/Qwen3-Embedding-4B", 2560, 36, 9728, 32, True),
)}
"""Shapes from the models' config.json on the Hugging Face hub (hidden_size, num_hidden_layers,
intermediate_size, num_attention_heads; 8 key/value heads of 128 dims; vocabulary 151,936)."""

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")

# AWS instance types: (vCPUs, GPUs, GPU model, GiB per GPU): the GPU memory a node type's resources do not say
INSTANCE_TYPES: dict[str, tuple[int, int, str | None, int]] = {
    "p4d.24xlarge": (96, 8, "A100", 40), "p4de.24xlarge": (96, 8, "A100", 80),
    "p5.48xlarge": (192, 8, "H100", 80), "g6e.xlarge": (4, 1, "L40S", 48), "g6e.8xlarge": (32, 1, "L40S", 48), "g6e.12xlarge": (48, 4, "L40S", 48),
    "g5.xlarge": (4, 1, "A10G", 24), "g5.12xlarge": (48, 4, "A10G", 24), "g6.xlarge": (4, 1, "L4", 24),
    "m6i.2xlarge": (8, 0, None, 0), "m6i.4xlarge": (16, 0, None, 0), "m6i.8xlarge": (32, 0, None, 0),
}


def shape_from_hf_config(name: str, c: dict[str, Any]) -> ModelShape:
    """A ModelShape from a Hugging Face config.json mapping."""
    try:
        hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        family = "encoder" if c.get("model_type") in ENCODER_TYPES else "decoder"
        return ModelShape(
            name, family, hidden, int(c["num_hidden_layers"]), int(c.get("intermediate_size") or 4 * hidden), heads,
            int(c.get("num_key_value_heads") or heads), int(c.get("head_dim") or hidden // heads),
            int(c["vocab_size"]), bool(c.get("tie_word_embeddings", True)), int(c.get("max_position_embeddings", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{name}: config.json lacks a model shape ({exc!r})") from None


def load_model_shape(name_or_path: str, model_config: str | None = None) -> ModelShape:
    """The shape of `model.name_or_path`: --model-config, else the model folder's config.json,
    else KNOWN_MODELS."""
    if model_config:
        path = Path(model_config).expanduser()
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise PlanError(f"--model-config: {path} not found")
        return shape_from_hf_config(name_or_path, json.loads(path.read_text()))
    try:
        local = resolve_model_path(name_or_path)
    except BoomError:
        local = ""
    if local and os.path.isfile(os.path.join(local, "config.json")):
        return shape_from_hf_config(name_or_path, json.loads(Path(local, "config.json").read_text()))
    if name_or_path in KNOWN_MODELS:
        return KNOWN_MODELS[name_or_path]
    raise PlanError(f"model.name_or_path: no config.json for {name_or_path!r} here and not a known model "
                    f"({', '.join(KNOWN_MODELS)}); pass --model-config PATH (a config.json or its folder)")


@dataclass
class BagRows:
    counts: dict[str, int]
    """Rows per task."""
    types: dict[str, str | None]
    source: str
    """Where the counts come from: "bag manifest" or "corpus"."""


def _jsonl_rows(fs, path: str) -> tuple[int, str | None]:
    """(lines with content, the first row's type) of a JSONL file, streamed in 16 MiB blocks."""
    rows, first, tail = 0, None, b""
    with fs.open_input_stream(path) as f:
        while block := f.read(16 << 20):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            rows += sum(1 for ln in lines if ln.strip())
            if first is None:
                first = next((ln for ln in lines if ln.strip()), None)
    if tail.strip():
        rows += 1
        first = first if first is not None else tail
    try:
        kind = json.loads(first).get("type") if first else None
    except (ValueError, AttributeError):
        kind = None
    return rows, kind if isinstance(kind, str) else None


def _parquet_rows(fs, path: str) -> tuple[int, str | None]:
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        kind = None
        if "type" in pf.schema_arrow.names and pf.metadata.num_row_groups:
            kind = next((t for t in pf.read_row_group(0, columns=["type"])["type"].to_pylist() if t), None)
        return pf.metadata.num_rows, kind


def corpus_rows(cfg: BoomConfig) -> tuple[dict[str, int], dict[str, str | None]]:
    """Rows and type of every task of the corpus (bad rows included: the bag stage quarantines them)."""
    fs, files = discover(cfg.corpus.path, cfg.corpus.format)
    counts, types = {}, {}
    for src in files:
        counts[src.task], types[src.task] = (_jsonl_rows if src.format == "jsonl" else _parquet_rows)(fs, src.path)
    return counts, types


def _same_store(a: str, b: str) -> bool:
    """Both URIs on one remote store (scheme and bucket or host)."""
    ua, ub = urlsplit(a), urlsplit(b)
    return bool(ua.scheme) and "://" in a and (ua.scheme, ua.netloc) == (ub.scheme, ub.netloc)


def bag_rows(cfg: BoomConfig, bags: list[str], assume_rows: int | None = None) -> dict[str, BagRows]:
    """Rows per task of each bag: its manifest where it exists, else sampled from the corpus counts
    (or from `assume_rows` rows of one task, for a corpus that cannot be read from here)."""
    ratios = {bag_name(r): r for r in cfg.bagging.ratios}
    out: dict[str, BagRows] = {}
    corpus: tuple[dict, dict] | None = None
    unreachable: OSError | None = None  # the work dir's store did not answer: ask it once, not per bag
    for bag in bags:
        manifest = None
        if unreachable is None:
            try:
                manifest = read_manifest(bag_dir(cfg.workdir, bag))
            except OSError as exc:
                if "://" in cfg.workdir:  # a remote store: the next bag would wait as long again
                    unreachable = exc
            except BoomError:
                pass
        if manifest and manifest.get("tasks"):
            tasks = manifest["tasks"]
            out[bag] = BagRows({t: int(v["selected"]) for t, v in tasks.items()},
                               {t: v.get("type") if isinstance(v.get("type"), str) else None for t, v in tasks.items()},
                               "bag manifest")
            continue
        if bag not in ratios:
            raise PlanError(f"train.bags: {bag} is not a bag of bagging.ratios ({', '.join(ratios)})")
        if corpus is None:
            if not assume_rows and unreachable is not None and _same_store(cfg.workdir, cfg.corpus.path):
                raise unreachable  # offline, each try of an S3 bucket costs seconds of retries
            corpus = ({"corpus": assume_rows}, {"corpus": None}) if assume_rows else corpus_rows(cfg)
        counts, types = corpus
        source = "--corpus-rows" if assume_rows else "corpus"
        out[bag] = BagRows({t: sample_size(ratios[bag], n) for t, n in counts.items()}, dict(types), source)
    return out


def read_node_types(path: str) -> list[NodeType]:
    """The worker node types of a Ray cluster-launcher YAML: their resources as
    boom_ray.runtime.cluster.node_types reads them (given in the YAML, so requests can be checked), their
    max_workers, and their GPU's model and memory from the instance type where INSTANCE_TYPES
    knows it."""
    try:
        resources = node_types(path)
        raw = yaml.safe_load(Path(path).read_text())
    except (ClusterError, OSError, yaml.YAMLError) as exc:
        raise PlanError(f"--cluster: {exc}") from None
    out = []
    for name, spec in raw["available_node_types"].items():
        if name == raw.get("head_node_type"):
            continue
        instance = (spec.get("node_config") or {}).get("InstanceType", "")
        _, _, gpu, gib = INSTANCE_TYPES.get(instance, (0, 0, None, 0))
        out.append(NodeType(name, resources[name], int(spec.get("max_workers", 0)), gpu, gib * 2**30 if gib else None))
    return out
