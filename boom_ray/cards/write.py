"""Writing model cards at the write sites: gather the dicts `boom_ray.cards.build` needs from the
files next to a model (boom_train.json, config_sentence_transformers.json, bag manifests) and write
README.md. A card that cannot be written is a warning, never a failed export or merge."""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from typing import Any

import pyarrow.fs as pafs

from boom_ray.cards import build as card
from boom_ray.config import MergeConfig
from boom_ray.runtime import storage

log = logging.getLogger(__name__)

README = "README.md"
TRAIN_MANIFEST = "boom_train.json"
UNKNOWN = "unknown"
"""The corpus an export card names when its bag manifest was not readable."""


def _is_local(ref: str) -> bool:
    return "://" not in ref and os.path.exists(os.path.expanduser(ref))


def absolute(ref: str) -> str:
    """A local path made absolute (so the card's YAML works from any directory); URIs unchanged."""
    return ref if "://" in ref else os.path.abspath(os.path.expanduser(ref))


def read_prompts(fs, model_dir: str) -> dict[str, str]:
    data = storage.read_json_or_none(fs, posixpath.join(model_dir, "config_sentence_transformers.json")) or {}
    return {k: v for k, v in (data.get("prompts") or {}).items() if isinstance(v, str)}


def write_text(fs, path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, path)


def bag_data(bag_manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row counts of a bag manifest that an export records (and a merge card shows)."""
    if not bag_manifest:
        return None
    return {"ratio": bag_manifest.get("ratio"), "rows": bag_manifest.get("rows"),
            "tasks": {t: {k: v for k, v in info.items() if k in ("type", "selected", "source_rows", "history", "new")}
                      for t, info in (bag_manifest.get("tasks") or {}).items()}}


def write_export_card(local_dir: str, *, bag: str, final: str, manifest: dict[str, Any],
                      bag_manifest: dict[str, Any] | None) -> None:
    try:
        fs = pafs.LocalFileSystem()
        request = manifest.get("request") or {}
        model, train = request.get("model") or {}, request.get("train") or {}
        base = str(model.get("name_or_path", "unknown"))
        text = card.export_card(
            name=posixpath.basename(final.rstrip("/")) or bag, bag=bag, base_model=base,
            base_hub_id=card.hub_id(base, _is_local(base)),
            corpus=str(((bag_manifest or {}).get("source") or {}).get("path") or UNKNOWN),
            bag_manifest=bag_manifest, model_settings={k: v for k, v in model.items() if k != "name_or_path"},
            train_settings=train, training=manifest, prompts=read_prompts(fs, local_dir), model_ref=final)
        write_text(fs, os.path.join(local_dir, README), text)
    except Exception as exc:  # noqa: BLE001 - a card must not fail an export
        log.warning("%s: model card not written: %s", final, exc)


def _input_info(fs, local_dir: str) -> dict[str, Any]:
    m = storage.read_json_or_none(fs, posixpath.join(local_dir, TRAIN_MANIFEST)) or {}
    rows = ((m.get("data") or {}).get("rows") or {}).get("selected")
    base = ((m.get("request") or {}).get("model") or {}).get("name_or_path")
    return {"bag": m.get("bag"), "rows": rows, "base": base}


def input_datasets(fs, local_dirs: list[str]) -> list[str]:
    """The corpora named by the input models' own cards, in order and once each: a merge of bags
    was trained on their corpus, which only their export cards (from the bag manifests) record."""
    names: list[str] = []
    for d in local_dirs:
        path = posixpath.join(d, README)
        if not storage.exists(fs, path):
            continue
        with fs.open_input_stream(path) as f:
            meta = card.front_matter_of(f.read().decode(errors="replace"))
        names += [str(n) for n in meta.get("datasets") or [] if str(n) not in names and n != UNKNOWN]
    return names


def merge_request_dict(request) -> dict[str, Any]:
    """`request.to_dict()` with local paths absolute (the card's YAML must not depend on the cwd)."""
    d = request.to_dict()
    d["models"] = [{**m, "path": absolute(m["path"])} for m in d["models"]]
    for key in ("base_model", "copy_files_from"):
        if d.get(key):
            d[key] = absolute(d[key])
    return d


def merge_settings(cfg) -> dict[str, Any]:
    """`--set` flags for `boom merge` that the run used and that differ from the defaults."""
    default = MergeConfig()
    return {"memory_budget": cfg.memory_budget} if cfg is not None and cfg.memory_budget != default.memory_budget else {}


def merge_card_text(request, local_inputs: dict[str, str], build_dir: str, out: str, cfg=None, *,
                    update: dict[str, Any] | None = None, results: dict[str, Any] | None = None) -> str:
    fs = pafs.LocalFileSystem()
    local_dirs = [local_inputs.get(m.path, m.path) for m in request.models]
    infos = [_input_info(fs, d) for d in local_dirs]
    base = next((i["base"] for i in infos if i.get("base")), None)
    if update is not None:  # the current model is the base of the lineage
        base = update["lineage"]["current_model"]["path"]
    common = dict(request=merge_request_dict(request), inputs=infos,
                  base_hub_id=card.hub_id(base, _is_local(base)) if base else None,
                  prompts=read_prompts(fs, build_dir), model_ref=out, settings=merge_settings(cfg), results=results)
    name = posixpath.basename(out.rstrip("/"))
    if update is not None:
        return card.update_card(name=name, lineage=update["lineage"], data=update["data"], **common)
    return card.merge_card(name=name, datasets=input_datasets(fs, local_dirs), **common)


def write_merge_card(request, local_inputs: dict[str, str], build_dir: str, out: str, cfg=None) -> None:
    try:
        write_text(pafs.LocalFileSystem(), os.path.join(build_dir, README),
                   merge_card_text(request, local_inputs, build_dir, out, cfg))
    except Exception as exc:  # noqa: BLE001 - a card must not fail a merge
        log.warning("%s: model card not written: %s", out, exc)
        stale = os.path.join(build_dir, README)  # the input's own card, copied with its files
        if os.path.exists(stale):
            os.remove(stale)


def write_update_card(request, merged: str, update_model: str, cfg, record: dict[str, Any],
                      results: dict[str, Any] | None) -> None:
    """The update card into `merged` (local or remote), replacing the plain merge card."""
    try:
        fs, path = storage.resolve(merged)
        local_merged = storage.local_dir(merged)
        local_inputs = {m.path: storage.local_dir(m.path) for m in request.models}
        text = merge_card_text(request, local_inputs, local_merged, merged, cfg, update=record, results=results)
        write_text(fs, posixpath.join(path, README), text)
    except Exception as exc:  # noqa: BLE001 - a card must not fail an update
        log.warning("%s: model card not written: %s", merged, exc)
