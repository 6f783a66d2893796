"""The product of a bag's training: `<workdir>/models/<bag>/`, a DESIGN.md model directory plus
`boom_train.json` (what produced it and how the run went).

A bag is skipped next time when its export's manifest carries the same *request*: the bag's own
identity (its manifest's request), the model section and the training settings that change the
weights. Resource settings (workers, CPUs, failures, logging, checkpoint cadence) are left out,
so re-running on a bigger cluster does not retrain.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs

from boom_ray import __version__
from boom_ray.cards.write import bag_data, write_export_card
from boom_ray.config import BoomConfig
from boom_ray.corpus.bags import bag_dir, read_bag, read_manifest
from boom_ray.errors import BoomError
from boom_ray.model.st_format import set_prompts
from boom_ray.runtime import storage
from boom_ray.train.zero3_export import stream_zero3_weights

MANIFEST = "boom_train.json"
TRAIN_VERSION = 2
"""Bumped when a change to the training code makes older exports stale (2: seeded RNGs, fp32 master weights)."""

_NOT_IN_REQUEST = {"bags", "checkpoint_every", "num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker",
                   "max_failures", "log_every", "max_concurrent_bags",
                   "mini_batch_size"}
# mini_batch_size (GradCache) changes how a step is split, not its loss or gradient, like num_workers;
# turning it on after an out-of-memory failure resumes the same run.


def model_dir(workdir: str, bag: str) -> str:
    return posixpath.join(workdir, "models", bag)


def train_request(cfg: BoomConfig, bag: str, bag_manifest: dict | None, precision: str) -> dict[str, Any]:
    """Everything that determines a bag's trained weights."""
    train = {k: v for k, v in cfg.train.model_dump().items() if k not in _NOT_IN_REQUEST}
    train["precision"] = precision
    train["deepspeed_config"] = (storage.file_sha256(os.path.expanduser(cfg.train.deepspeed_config))
                                if cfg.train.deepspeed_config else None)
    bag_identity = (bag_manifest or {}).get("request") or {"created": (bag_manifest or {}).get("created")}
    return {"bag": bag, "bag_request": bag_identity, "model": cfg.model.model_dump(), "train": train,
            "train_version": TRAIN_VERSION}


def request_hash(request: dict[str, Any]) -> str:
    return storage.stable_hash(request, 16)


def read_export_manifest(workdir: str, bag: str) -> dict | None:
    fs, root = storage.resolve(workdir)
    return storage.read_json_or_none(fs, posixpath.join(model_dir(root, bag), MANIFEST))


def export_matches(workdir: str, bag: str, digest: str) -> bool:
    """True when `<workdir>/models/<bag>/` is a finished export of the same request."""
    manifest = read_export_manifest(workdir, bag)
    return bool(manifest) and manifest.get("request_hash") == digest


class NothingTrainedError(BoomError):
    """Every optimizer step of a bag was skipped: its weights are the base model's."""


def check_steps_applied(bag: str, steps: int, skipped_steps: int) -> None:
    """Refuse to export a bag none of whose optimizer steps changed the weights. DeepSpeed's bf16
    and fp16 optimizers skip a step whose gradients hold inf/NaN (`engine.skipped_steps`), and the
    loop would otherwise export the untouched base weights as a trained bag, which a re-run then
    skips as up to date and a merge takes as a bag."""
    if steps > 0 and skipped_steps >= steps:
        raise NothingTrainedError(f"{bag}: all {steps} optimizer steps were skipped (inf/NaN gradients): "
                                  "nothing trained, no export written")


def export_manifest(*, bag: str, request: dict, digest: str, steps: int, tokens: int, final_loss: float | None,
                    wall_time_s: float, **extra: Any) -> dict[str, Any]:
    return {"bag": bag, "steps": steps, "tokens_seen": tokens, "final_loss": final_loss,
            "wall_time_s": round(wall_time_s, 3), "request_hash": digest, "request": request,
            "boom_ray_version": __version__, **extra}


@contextlib.contextmanager
def gathered(module, zero_stage: int):
    """Full parameters of `module` on every rank for the duration (ZeRO-3 shards them). Only the
    LoRA export under ZeRO-3 still needs this (merging adapters needs whole base weights); plain
    ZeRO-3 exports stream (:func:`write_export_zero3`)."""
    if zero_stage != 3:
        yield
        return
    import deepspeed  # lazy: deepspeed, workers only (the driver imports export for its manifests)

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def full_model_for_export(embedder, zero_stage: int, is_rank0: bool) -> tuple[Any, dict | None]:
    """(HF model to save, its full state dict) on rank 0; (None, None) elsewhere. Collective under
    ZeRO-3: every rank must call it. LoRA adapters are merged into the base weights."""
    model, state = None, None
    with gathered(embedder.model, zero_stage):
        if is_rank0:
            model = embedder.model
            if hasattr(model, "merge_and_unload"):  # peft: fold B @ A * scale into the weights
                model = model.merge_and_unload()
            state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    return model, state


def write_export_zero3(embedder, workdir: str, bag: str, manifest: dict[str, Any] | None, is_rank0: bool,
                       max_shard_size: int = 5 * 10**9) -> str | None:
    """ZeRO-3 without LoRA: collective; rank 0 writes the config, tokenizer and
    sentence-transformers files, then the weights stream in parameter by parameter, shard by
    shard (:mod:`boom_ray.train.zero3_export`), and the folder moves into place. Returns the
    export's URI on rank 0."""
    tmp = tempfile.mkdtemp(prefix=f"boom-export-{bag}-") if is_rank0 else None
    try:
        local = os.path.join(tmp, "model") if is_rank0 else None
        if is_rank0:
            embedder.save(local, state_dict={})  # everything but the weights
        info = stream_zero3_weights(embedder.model, is_rank0, local, max_shard_size)
        if not is_rank0:
            return None
        return _publish(embedder, local, workdir, bag, {**(manifest or {}), "export": {"mode": "zero3-streamed", **info}})
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


MAX_NAMED_PROMPTS = 100
"""Task prompts an export names in its sentence-transformers `prompts` (beyond that: none named)."""


def bag_prompt_usage(bag_uri: str) -> tuple[int, dict[str, list[str]]]:
    """(rows without a `prompt` of their own, {task: its distinct row prompts}) of a bag."""
    table = read_bag(bag_uri, columns=["task", "prompt"])
    prompt = table["prompt"]
    missing = int(pc.sum(pc.or_kleene(pc.is_null(prompt), pc.equal(prompt, ""))).as_py() or 0)
    pairs = table.filter(pc.invert(pc.fill_null(pc.equal(prompt, ""), True))).group_by(["task", "prompt"]).aggregate([])
    tasks: dict[str, list[str]] = {}
    for task, text in zip(pairs["task"].to_pylist(), pairs["prompt"].to_pylist()):
        tasks.setdefault(task, []).append(text)
    return missing, {t: sorted(p) for t, p in sorted(tasks.items())}


def trained_prompts(query_template: str, default_instruction: str, rows_without_prompt: int,
                    task_prompts: dict[str, list[str]]) -> dict[str, str]:
    """The sentence-transformers `prompts` an export may advertise: the query texts its training used.

    Training formats a query as `query_template` with the row's own `prompt`, else
    `default_instruction` (`boom_ray.train.collate`). So the default instruction is a trained
    `query` prompt only when some row had no prompt of its own (the DESIGN's reference recipe), or
    when the template has no {instruction} slot (every row then got the same prefix). Each task
    whose rows shared one prompt is named by its task (`SentenceTransformer.encode(...,
    prompt_name=task)`). A template that is not a prefix (text after {query}) has no ST form."""
    if not query_template.endswith("{query}") or query_template.count("{query}") != 1:
        return {}
    prefix = query_template[: -len("{query}")]
    prompts: dict[str, str] = {}
    if len(task_prompts) <= MAX_NAMED_PROMPTS:
        prompts = {task: prefix.format(instruction=ps[0]) for task, ps in task_prompts.items() if len(ps) == 1}
    if rows_without_prompt > 0 or "{instruction}" not in prefix:
        prompts = {"query": prefix.format(instruction=default_instruction), "document": "", **prompts}
    return prompts


def _publish(embedder, local: str, workdir: str, bag: str, manifest: dict[str, Any]) -> str:
    """Finish the local model folder and move/upload it to `<workdir>/models/<bag>/`: the prompts
    training used (not the config's defaults), the manifest with the bag's row counts (merge cards
    read them), and the model card."""
    fs, root = storage.resolve(workdir)
    final = model_dir(root, bag)
    missing, task_prompts = bag_prompt_usage(bag_dir(workdir, bag))
    cfg = embedder.config
    set_prompts(local, trained_prompts(cfg.query_template, cfg.default_instruction, missing, task_prompts))
    bag_manifest = read_manifest(bag_dir(workdir, bag))
    manifest = {**manifest, "data": bag_data(bag_manifest)}
    with open(os.path.join(local, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    write_export_card(local, bag=bag, final=final, manifest=manifest, bag_manifest=bag_manifest)
    with storage.staged_dir(fs, final) as staged:
        pafs.copy_files(local, staged, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return final


def write_export(embedder, model, state: dict, workdir: str, bag: str, manifest: dict[str, Any]) -> str:
    """Save locally, then move/upload into `<workdir>/models/<bag>/` via a temporary name."""
    embedder.model = model
    with tempfile.TemporaryDirectory(prefix=f"boom-export-{bag}-") as tmp:
        local = os.path.join(tmp, "model")
        embedder.save(local, state_dict=state)
        return _publish(embedder, local, workdir, bag, manifest)
