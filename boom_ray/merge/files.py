"""The non-weight files of a merged model: config, tokenizer and sentence-transformers files
(`modules.json`, `1_Pooling/`, ...), copied from one input, because a merge changes only weights
(the top-level ones, and those of weighted modules such as `2_Dense/`: merge/modules.py)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterator

from boom_ray.merge.io import INDEX_FILE

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".npz")
SKIP_NAMES = {INDEX_FILE, "pytorch_model.bin.index.json", "boom_merge.json"}


def is_weight_file(name: str) -> bool:
    return name in SKIP_NAMES or name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")


def model_files(src: str) -> Iterator[str]:
    """Relative paths of every non-weight file under `src` (hidden ones and weights excluded)."""
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = os.path.relpath(root, src)
        for name in sorted(files):
            if not (name.startswith(".") or is_weight_file(name)):
                yield os.path.normpath(os.path.join(rel_root, name))


def model_file_sizes(src: str) -> list[int]:
    """Bytes of each file `copy_model_files` copies from `src` (the free-space check)."""
    return [os.path.getsize(os.path.join(src, rel)) for rel in model_files(src)]


def copy_model_files(src: str, dst: str, dtype: str | None = None) -> list[str]:
    """Copy every non-weight file under `src` (`model_files`) into `dst`; with `dtype`,
    config.json's dtype entry says what the merged weights are stored as.
    Returns the relative paths copied."""
    copied = []
    for rel in model_files(src):
        os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
        shutil.copyfile(os.path.join(src, rel), os.path.join(dst, rel))
        copied.append(rel)
    config = os.path.join(dst, "config.json")
    if dtype and os.path.isfile(config):
        try:
            with open(config) as f:
                data = json.load(f)
        except ValueError:
            return copied
        if isinstance(data, dict):
            for key in ("torch_dtype", "dtype"):
                if key in data:
                    data[key] = dtype
            with open(config, "w") as f:
                json.dump(data, f, indent=2)
    return copied
