"""`boom update`: absorb new data without retraining every bag.

    current model + new corpus (+ a stratified `history_ratio` sample of the old corpus)
      -> train one update model, starting from the current model
      -> multislerp(current, update) with weights = the corpora's sizes (2.8 and 4.3 in the paper)
      -> evaluate both models on the run's suites

The run config's `corpus` is the new data, `update.old_corpus` the data the current model was
trained on. Work dir layout:

    history/bags/bag40/   the old-corpus sample        new/bags/bag100/   the validated new data
    bags/update/          both, the update's training data
    models/update/        the update model             merges/updated/    the updated model
    update.json           lineage, training cost and both models' scores

Every step is skipped when its output exists and its manifest matches, like `boom run`.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import tempfile
from typing import Any

import pyarrow.fs as pafs
import ray

from boom_ray import __version__
from boom_ray.cards.write import write_update_card
from boom_ray.config import BoomConfig, bag_name, derive
from boom_ray.corpus.bag_stage import run_bagging
from boom_ray.corpus.bags import bag_dir, read_manifest
from boom_ray.errors import BoomError
from boom_ray.eval.evaluate import evaluate_model, load_suites
from boom_ray.eval.results import format_table
from boom_ray.merge.io import index_model
from boom_ray.merge.request import MergeRequest, ModelInput, fingerprint
from boom_ray.merge.stage import is_done
from boom_ray.merge.task import submit_merge
from boom_ray.model.embedder import Embedder
from boom_ray.runtime import storage
from boom_ray.runtime.ray_session import init_ray
from boom_ray.train.export import model_dir, read_export_manifest
from boom_ray.train.launch import summary_table, train_bags

UPDATE_BAG = "update"
MERGED_NAME = "updated"


class UpdateError(BoomError):
    pass


def sample_sources(cfg: BoomConfig) -> tuple[str, str]:
    """Bag the old corpus at `history_ratio` and validate the new one; returns both bag URIs."""
    assert cfg.update is not None
    history = derive(cfg, {"workdir": posixpath.join(cfg.workdir, "history"),
                           "corpus.path": cfg.update.old_corpus,
                           "bagging.ratios": [cfg.update.history_ratio],
                           "bagging.strategy": "random"})  # an update samples by ratio, never by group
    new = derive(cfg, {"workdir": posixpath.join(cfg.workdir, "new"), "bagging.ratios": [1.0],
                       "bagging.strategy": "random"})
    for part in (history, new):
        run_bagging(part)
    return (bag_dir(history.workdir, bag_name(cfg.update.history_ratio)),
            bag_dir(new.workdir, bag_name(1.0)))


def mix_bags(cfg: BoomConfig, history_uri: str, new_uri: str) -> dict[str, Any]:
    """`<workdir>/bags/update/`: the history sample and the new data side by side, one manifest.

    Tasks keep their names, so a task present in both corpora trains as one task."""
    hist, new = read_manifest(history_uri), read_manifest(new_uri)
    request = {"history": hist["request"], "new": new["request"]}
    out = bag_dir(cfg.workdir, UPDATE_BAG)
    existing = read_manifest(out)
    if existing and existing.get("request") == request:
        return existing
    tasks: dict[str, dict[str, Any]] = {}
    for part, manifest in (("history", hist), ("new", new)):
        for task, info in manifest["tasks"].items():
            entry = tasks.setdefault(task, {"type": info["type"], "selected": 0, "history": 0, "new": 0})
            entry["selected"] += info["selected"]
            entry[part] += info["selected"]
    manifest = {
        "bag": UPDATE_BAG, "request": request,
        "rows": {"history": hist["rows"]["selected"], "new": new["rows"]["selected"],
                 "selected": hist["rows"]["selected"] + new["rows"]["selected"],
                 "old_corpus": hist["rows"]["kept"], "new_corpus": new["rows"]["kept"]},
        "tasks": tasks, "boom_ray_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    fs, path = storage.resolve(out)
    with storage.staged_dir(fs, path) as staged:
        for part, uri in (("history", history_uri), ("new", new_uri)):
            src_fs, src = storage.resolve(uri)
            fs.create_dir(posixpath.join(staged, part), recursive=True)
            pafs.copy_files(src, posixpath.join(staged, part), source_filesystem=src_fs, destination_filesystem=fs)
            storage.remove(fs, posixpath.join(staged, part, "manifest.json"))
        storage.write_json(fs, posixpath.join(staged, "manifest.json"), manifest)
    return manifest


def default_weights(mix: dict[str, Any]) -> tuple[float, float]:
    """The paper's weights: the size of the data behind each model, in millions of rows."""
    return mix["rows"]["old_corpus"] / 1e6, mix["rows"]["new_corpus"] / 1e6


def training_cost(cfg: BoomConfig, mix: dict[str, Any], export: dict[str, Any]) -> dict[str, Any]:
    """Tokens the update processed against an estimate for retraining every bag on old + new data:
    the same tokens per row, times (old + new rows) x the sum of the bag ratios."""
    rows_per_epoch = mix["rows"]["selected"]
    tokens = int(export["tokens_seen"])
    per_row = tokens / max(1, rows_per_epoch * cfg.train.epochs)
    retrain_rows = (mix["rows"]["old_corpus"] + mix["rows"]["new_corpus"]) * sum(cfg.bagging.ratios) * cfg.train.epochs
    retrain = int(per_row * retrain_rows)
    return {"update_tokens": tokens, "retrain_all_bags_tokens_estimate": retrain,
            "retrain_over_update": round(retrain / max(1, tokens), 2),
            "bags_in_full_retrain": [bag_name(r) for r in cfg.bagging.ratios]}


ALIGNED_FROM = ".boom_aligned_from.json"
"""In an aligned copy: the fingerprint of the model it was made from (hidden, so a merge does not
copy it into its output)."""


def aligned_current_model(cfg: BoomConfig, current: str, update_model: str) -> str:
    """The current model with the same tensors as the update export.

    A model saved by another transformers version may carry buffers the export does not (e.g.
    BERT's `embeddings.position_ids`), and merging needs identical tensor sets. Such a model is
    loaded and saved once in boom-ray's format under `<workdir>/current/`, which is reused while
    the current model's fingerprint stays the same; a boom-ray export or merge is used as it is."""
    fs, local = storage.resolve(current)
    if not isinstance(fs, pafs.LocalFileSystem):
        return current
    export_tensors = set(index_model(storage.local_dir(update_model)))
    if set(index_model(local)) == export_tensors:
        return current
    source = fingerprint(current)
    aligned = posixpath.join(cfg.workdir, "current")
    afs, apath = storage.resolve(aligned)
    made_from = storage.read_json_or_none(afs, posixpath.join(apath, ALIGNED_FROM)) or {}
    if made_from.get("fingerprint") == source:
        return aligned
    print(f"{current}: tensors differ from the export format; saving an aligned copy to {aligned}")
    with tempfile.TemporaryDirectory(prefix="boom-aligned-") as tmp:
        copy = os.path.join(tmp, "model")
        Embedder.from_pretrained(current, cfg.model).save(copy)
        storage.write_json(pafs.LocalFileSystem(), os.path.join(copy, ALIGNED_FROM),
                           {"source": current, "fingerprint": source})
        with storage.staged_dir(afs, apath) as staged:
            pafs.copy_files(copy, staged, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=afs)
    return aligned


def run_update(cfg: BoomConfig) -> dict[str, Any]:
    """The whole update (module docstring); returns what it writes to <workdir>/update.json."""
    if cfg.update is None:
        raise UpdateError("the config has no `update` section (current_model, old_corpus, ...)")
    init_ray(cfg.ray)
    current = cfg.update.current_model
    fs_model, model_path = storage.resolve(current)
    if not storage.exists(fs_model, posixpath.join(model_path, "config.json")):
        raise UpdateError(f"{current}: update.current_model is not a model directory (no config.json)")

    print("=== sample history + validate new data ===", flush=True)
    history_uri, new_uri = sample_sources(cfg)
    mix = mix_bags(cfg, history_uri, new_uri)
    print(f"update data: {mix['rows']['history']} history rows ({cfg.update.history_ratio:.0%} of "
          f"{mix['rows']['old_corpus']}) + {mix['rows']['new']} new rows", flush=True)

    print("=== train the update model ===", flush=True)
    train_cfg = derive(cfg, {"model.name_or_path": current, "train.bags": [UPDATE_BAG]})
    results = train_bags(train_cfg, [UPDATE_BAG])
    print(summary_table(results), flush=True)
    if results[0].status == "failed":
        raise UpdateError(f"training the update model failed: {results[0].error}")
    export = read_export_manifest(cfg.workdir, UPDATE_BAG)
    update_model = model_dir(cfg.workdir, UPDATE_BAG)

    print("=== merge ===", flush=True)
    w_current, w_update = cfg.update.merge_weights or default_weights(mix)
    current = aligned_current_model(cfg, current, update_model)
    request = MergeRequest("multislerp", [ModelInput(current, {"weight": w_current}),
                                          ModelInput(update_model, {"weight": w_update})],
                           copy_files_from=current)
    merged = posixpath.join(cfg.workdir, "merges", MERGED_NAME)
    if not is_done(merged, request):
        ray.get(submit_merge(request, merged, cfg.merge, force=True))
    print(f"{merged}: multislerp(current x {w_current:.3g}, update x {w_update:.3g})", flush=True)

    scores = {}
    if cfg.eval.suites:
        suites = load_suites(cfg.eval.suites)
        for label, path in (("current", cfg.update.current_model), ("updated", merged)):
            print(f"=== evaluate {label} model ===", flush=True)
            scores[label] = evaluate_model(path, suites, cfg.eval, show_progress=True)
            print(format_table(scores[label]), flush=True)

    record = {
        "lineage": {"current_model": {"path": cfg.update.current_model,
                                      "fingerprint": fingerprint(cfg.update.current_model)},
                    "merged_from": current,
                    "old_corpus": cfg.update.old_corpus, "new_corpus": cfg.corpus.path,
                    "history_ratio": cfg.update.history_ratio, "history_bag": history_uri,
                    "new_bag": new_uri, "update_model": update_model, "updated_model": merged,
                    "merge": {"method": "multislerp", "weights": [w_current, w_update]}},
        "data": mix["rows"],
        "training_cost": training_cost(cfg, mix, export),
        "scores": {k: {"id_mean": v["id_mean"], "ood_mean": v["ood_mean"]} for k, v in scores.items()},
        "boom_ray_version": __version__,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    fs, root = storage.resolve(cfg.workdir)
    storage.write_json(fs, posixpath.join(root, "update.json"), record)
    write_update_card(request, merged, update_model, cfg.merge, record, scores.get("updated"))
    return record
