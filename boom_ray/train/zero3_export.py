"""The ZeRO-3 export, consolidated on rank 0 one parameter at a time and written shard by shard.

Why: the old export gathered every parameter on every rank at once (the whole model on every
GPU) and then copied it to rank 0's memory: the whole model twice on rank 0, and a 4B model on
every GPU of the node. Here every rank takes part in gathering one parameter at a time (a
collective: ZeRO-3 shards each parameter over all ranks), rank 0 copies it to CPU and appends it
to the current safetensors shard, and a full shard is written and dropped before the next one
fills. Peak: one gathered parameter on each GPU, one shard in rank 0's memory.

Shards follow Hugging Face's layout: ``model.safetensors``, or ``model-0000i-of-0000N.safetensors``
with ``model.safetensors.index.json``; keys are those of ``model.state_dict()``. The rest of the
model folder (config, tokenizer, sentence-transformers files) is what :meth:`Embedder.save`
writes around the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ShardWriter:
    """Tensors in, safetensors shards of at most `max_shard_size` bytes out (rank 0 only)."""

    def __init__(self, out_dir: str | os.PathLike, max_shard_size: int):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max = max_shard_size
        self.current: dict[str, Any] = {}
        self.current_bytes = 0
        self.parts: list[list[str]] = []
        self.total = 0

    def add(self, name: str, tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.current and self.current_bytes + size > self.max:
            self._flush()
        self.current[name] = tensor
        self.current_bytes += size
        self.total += size

    def _flush(self) -> None:
        from safetensors.torch import save_file  # lazy: torch, export imports this module in the driver

        save_file(self.current, str(self.out / f"part-{len(self.parts):05d}.safetensors"), metadata={"format": "pt"})
        self.parts.append(list(self.current))
        self.current, self.current_bytes = {}, 0

    def close(self) -> list[str]:
        """Name the shards as Hugging Face does (and write the index when there are several)."""
        if self.current or not self.parts:
            self._flush()
        n = len(self.parts)
        if n == 1:
            os.replace(self.out / "part-00000.safetensors", self.out / "model.safetensors")
            return ["model.safetensors"]
        names, weight_map = [], {}
        for i, keys in enumerate(self.parts):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.out / f"part-{i:05d}.safetensors", self.out / name)
            names.append(name)
            weight_map.update({k: name for k in keys})
        (self.out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": weight_map}, indent=2) + "\n")
        return names


def stream_zero3_weights(model, is_rank0: bool, out_dir: str | None, max_shard_size: int) -> dict[str, Any]:
    """Collective over every rank: gather each parameter of `model` in turn; rank 0 writes the
    shards into `out_dir`. Returns {"dtype": str, "peak_param_bytes": int} (meaningful on rank 0)."""
    import deepspeed  # lazy: deepspeed, workers only (export imports this module in the driver)

    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers())
    writer = ShardWriter(out_dir, max_shard_size) if is_rank0 else None
    dtypes, largest = set(), 0
    for key in model.state_dict().keys():  # under ZeRO-3 the values are placeholders; the keys are right
        tensor = params.get(key)
        if tensor is None:
            if is_rank0:
                writer.add(key, buffers[key].detach().to("cpu", copy=True).contiguous())
            continue
        with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
            if is_rank0:
                full = tensor.detach().to("cpu", copy=True).contiguous()
                dtypes.add(str(full.dtype).replace("torch.", ""))
                largest = max(largest, full.numel() * full.element_size())
                writer.add(key, full)
    if is_rank0:
        writer.close()
    return {"dtype": sorted(dtypes)[0] if len(dtypes) == 1 else None, "peak_param_bytes": largest}
