"""What to merge: the request (method, inputs, weights, parameters, output dtype), how mergekit's
YAML maps onto it, input fingerprints, and the manifest written next to the merged weights.

A manifest records enough to tell whether an existing output answers the same request: method,
parameters, output dtype and each input's path, parameters and fingerprint. A fingerprint hashes
every weight file's name, size and safetensors header plus 64 KiB samples at four places of its
data (the weighted sentence-transformers modules' files too, named `2_Dense/model.safetensors`),
so it costs a few reads per file instead of hashing gigabytes, and still changes when a model is
retrained (same shapes, different values).
"""

from __future__ import annotations

import json
import os
import posixpath
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from boom_ray import __version__
from boom_ray.runtime import storage
from boom_ray.errors import BoomError
from boom_ray.merge.io import OUTPUT_DTYPES, weight_files
from boom_ray.merge.methods import Method, Settings, get_method
from boom_ray.merge.modules import module_weight_files

MANIFEST = "boom_merge.json"
MANIFEST_FORMAT = "boom-merge/1"


class MergeRequestError(BoomError):
    """A merge request or mergekit YAML that cannot be run; the message names the file and key."""


@dataclass(frozen=True)
class ModelInput:
    path: str
    """Model directory: local path or pyarrow filesystem URI (file://, s3://, gs://)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Per-model parameters: `weight`, and `density` for ties."""


@dataclass(frozen=True)
class MergeRequest:
    method: str
    models: list[ModelInput]
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    """Output dtype of float tensors: float32, bfloat16 or float16; None keeps the inputs'."""
    copy_files_from: str | None = None
    """Model whose config, tokenizer and sentence-transformers files the output gets; default:
    the base model if any, else the first model."""

    def files_source(self) -> str:
        return self.copy_files_from or self.base_model or self.models[0].path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validated(request: MergeRequest) -> tuple[Method, Settings]:
    """The request's method and its parameters checked (`Method.validate`): an error for what the
    method cannot use, a warning line for a parameter it does not define."""
    method = get_method(request.method)
    return method, method.validate(len(request.models), request.base_model is not None, request.parameters,
                                   [m.parameters for m in request.models])


_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                  "float16": "float16", "fp16": "float16", "half": "float16"}
_BASE_AS_INPUT = {"linear", "karcher"}
_MERGEKIT_KEYS = {"models", "merge_method", "base_model", "parameters", "dtype", "out_dtype",
                  "tokenizer_source", "name", "chat_template"}


def normalize_dtype(value: Any, where: str) -> str | None:
    if value is None:
        return None
    dtype = _DTYPE_ALIASES.get(str(value).removeprefix("torch."))
    if dtype is None:
        raise MergeRequestError(f"{where}: dtype {value!r} is not supported; use one of {sorted(OUTPUT_DTYPES)}")
    return dtype


def _model_path(ref: Any, yaml_dir: str, where: str) -> str:
    if not isinstance(ref, str) or not ref:
        raise MergeRequestError(f"{where}: expected a model path, got {ref!r}")
    if "+" in ref and not os.path.exists(ref):
        raise MergeRequestError(f"{where}: LoRA references ({ref!r}) are not supported; merge the adapter first")
    if "://" in ref or os.path.exists(ref):
        return ref
    beside = os.path.join(yaml_dir, ref)
    if os.path.exists(beside):  # (an absolute ref joins to itself, already found missing above)
        return beside
    raise MergeRequestError(f"{where}: model {ref!r} not found (hub ids cannot be downloaded here; give a local "
                            "directory or a URI)")


def from_mergekit(data: Any, source: str = "<mergekit yaml>", yaml_dir: str = ".") -> MergeRequest:
    """A request from a mergekit config (the `models:` form; `slices:` is not supported).

    mergekit's `dtype` is the dtype it computes in and, without `out_dtype`, writes; boom-ray always
    computes in float32 (statistics in float64) and writes `out_dtype`, else `dtype`, else the
    inputs' dtype. The base model, when also listed under `models`, is the base and not an input
    (for `linear` and `karcher`, which have no base, it stays an ordinary input; mergekit adds an
    unlisted base to karcher's inputs, and so does this)."""
    if not isinstance(data, dict):
        raise MergeRequestError(f"{source}: expected a mapping at the top level")
    if "slices" in data:
        raise MergeRequestError(f"{source}: `slices` configs are not supported; use the `models:` form")
    unknown = sorted(set(data) - _MERGEKIT_KEYS)
    if unknown:
        raise MergeRequestError(f"{source}: unsupported key {unknown[0]!r}")
    method = data.get("merge_method")
    if not isinstance(method, str):
        raise MergeRequestError(f"{source}: merge_method is required")
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise MergeRequestError(f"{source}: models must be a non-empty list")
    base = data.get("base_model")
    base = _model_path(base, yaml_dir, f"{source}: base_model") if base is not None else None
    models = []
    for i, entry in enumerate(entries):
        where = f"{source}: models[{i}]"
        if not isinstance(entry, dict) or "model" not in entry:
            raise MergeRequestError(f"{where}: expected a mapping with a `model` key")
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise MergeRequestError(f"{where}.parameters: expected a mapping")
        path = _model_path(entry["model"], yaml_dir, f"{where}.model")
        if base is not None and entry["model"] == data.get("base_model") and method not in _BASE_AS_INPUT:
            continue
        models.append(ModelInput(path, dict(params)))
    if method in _BASE_AS_INPUT and base is not None:
        if not any(m.path == base for m in models):
            if method == "linear":
                raise MergeRequestError(f"{source}: linear has no base model; list {base} under models with a weight")
            models.append(ModelInput(base, {}))
        base = None
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise MergeRequestError(f"{source}: parameters: expected a mapping")
    dtype = normalize_dtype(data.get("out_dtype") or data.get("dtype"), source)
    tok = data.get("tokenizer_source")
    copy_from = None
    if tok is not None:
        if tok == "base":
            copy_from = base
        elif isinstance(tok, str) and tok != "union":
            copy_from = _model_path(tok, yaml_dir, f"{source}: tokenizer_source")
        else:
            raise MergeRequestError(f"{source}: tokenizer_source {tok!r} is not supported (use base or a model path)")
    return MergeRequest(method, models, base, dict(params), dtype, copy_from)


def load_mergekit_yaml(path: str) -> MergeRequest:
    if not os.path.isfile(path):
        raise MergeRequestError(f"{path}: mergekit config not found")
    try:
        data = yaml.safe_load(open(path))
    except yaml.YAMLError as exc:
        raise MergeRequestError(f"{path}: not valid YAML: {exc}") from None
    return from_mergekit(data, path, os.path.dirname(os.path.abspath(path)))


def fingerprint(uri: str) -> str:
    """Cheap content fingerprint of a model's weights, its weighted sentence-transformers modules'
    included (see the module docstring)."""
    fs, _ = storage.resolve(uri)
    files = [(posixpath.basename(p), p) for p in weight_files(uri)]
    files += [(f"{module}/{posixpath.basename(p)}", p) for module, p in module_weight_files(uri)]
    parts = []
    for name, path in files:
        with fs.open_input_file(path) as f:
            size = f.size()
            head = f.read_at(8, 0)
        safetensors = name.endswith(".safetensors") and len(head) == 8
        header = struct.unpack("<Q", head)[0] if safetensors else 0
        parts.append([name, size, storage.sampled_digest(fs, path, head=min(8 + header, size), pieces=4)])
    return storage.stable_hash(parts, 32)


def build_manifest(request: MergeRequest, fingerprints: dict[str, str], summary: dict[str, Any],
                   seconds: float) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "boom_ray_version": __version__,
        "method": request.method,
        "parameters": request.parameters,
        "dtype": request.dtype,
        "base_model": None if request.base_model is None else
        {"path": request.base_model, "fingerprint": fingerprints[request.base_model]},
        "models": [{"path": m.path, "parameters": m.parameters, "fingerprint": fingerprints[m.path]}
                   for m in request.models],
        "files_from": request.files_source(),
        "output": summary,
        "seconds": round(seconds, 3),
    }


def request_key(manifest: dict[str, Any]) -> str:
    """What makes two merges the same: everything but timings, version and output summary."""
    keep = {k: manifest.get(k) for k in ("method", "parameters", "dtype", "base_model", "models", "files_from")}
    return json.dumps(keep, sort_keys=True, default=str)


def manifest_key_for(request: MergeRequest) -> str:
    """The `request_key` a finished merge of `request` would have (fingerprints the inputs now)."""
    paths = [m.path for m in request.models] + ([request.base_model] if request.base_model else [])
    fps = {p: fingerprint(p) for p in paths}
    return request_key(build_manifest(request, fps, {}, 0.0))
