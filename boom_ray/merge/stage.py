"""The merge stage of a run (`boom merge --config RUN.yaml`): the run's merge section as requests.

It merges the run's bag exports, `<workdir>/models/<bag>/`, into `<workdir>/merges/<name>/`
with one Ray task per merge; a merge whose output manifest already matches the request (same
method, weights, parameters and input fingerprints) is skipped unless --force.
"""

from __future__ import annotations

from typing import Any

from boom_ray.config import ConfigError, BoomConfig
from boom_ray.merge.executor import human_bytes
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import (MANIFEST, MergeRequest, ModelInput,
                                    manifest_key_for, request_key, validated)
from boom_ray.merge.task import MergeOutputExists, submit_merge
from boom_ray.runtime import storage
from boom_ray.runtime.disk_space import DiskFullError
from boom_ray.runtime.ray_session import init_ray


def bag_dirs(cfg: BoomConfig) -> dict[str, tuple[str, float]]:
    """bag name -> (exported model directory, default weight: the ratio, or for task / cluster
    bags the share of the corpus rows, see `corpus.bags.run_bags`)."""
    # (not at the top: `boom merge` of a mergekit YAML has no bags, and its merge's peak RSS would grow)
    from boom_ray.corpus.bags import run_bags  # lazy: pyarrow.parquet, pyarrow.compute (13 MiB RSS)

    return {name: (storage.join(cfg.workdir, "models", name), w) for name, w in run_bags(cfg).items()}


def run_requests(cfg: BoomConfig) -> list[tuple[str, MergeRequest]]:
    """(output directory, request) for every merge of the run config."""
    bags = bag_dirs(cfg)

    def ref(value: str | None) -> str | None:
        return bags[value][0] if value in bags else value

    out = []
    for spec in cfg.merge.merges:
        weights = spec.weights or {bag: ratio for bag, (_, ratio) in bags.items()}
        unknown = [b for b in weights if b not in bags]
        if unknown:
            raise ConfigError(f"merge.merges[{spec.name}].weights: unknown bag {unknown[0]!r}; bags: {sorted(bags)}")
        per_model_keys = set(get_method(spec.method).per_model) - {"weight"}
        shared = {k: v for k, v in spec.parameters.items() if k not in per_model_keys}
        per_model = {k: v for k, v in spec.parameters.items() if k in per_model_keys}
        models = [ModelInput(bags[b][0], {"weight": float(w), **per_model}) for b, w in weights.items()
                  if ref(spec.base_model) != bags[b][0]]
        request = MergeRequest(spec.method, models, ref(spec.base_model), shared, spec.dtype,
                               ref(cfg.merge.copy_files_from))
        out.append((storage.join(cfg.workdir, "merges", spec.name), request))
    return out


def _matches(manifest: dict[str, Any] | None, request: MergeRequest) -> bool:
    """Whether an output manifest (None: missing or unreadable) is that of exactly this request."""
    return manifest is not None and request_key(manifest) == manifest_key_for(request)


def is_done(out: str, request: MergeRequest) -> bool:
    """Whether `out` holds a finished merge of exactly this request."""
    fs, path = storage.resolve(out)
    return _matches(storage.read_json_or_none(fs, storage.join(path, MANIFEST)), request)


def run_merges(cfg: BoomConfig, *, force: bool = False) -> list[dict[str, Any]]:
    """Merge the run's bags as its merge section says, one Ray task per merge (concurrently, as
    resources allow). Returns one manifest per merge (the existing one for skipped merges)."""
    requests = run_requests(cfg)
    todo, results = [], {}
    for out, request in requests:
        fs, path = storage.resolve(out)
        if not force and storage.exists(fs, path):
            manifest_path = storage.join(path, MANIFEST)
            manifest = storage.read_json_or_none(fs, manifest_path)
            if _matches(manifest, request):
                results[out] = manifest | {"skipped": True}
                continue
            if manifest is None and not storage.exists(fs, manifest_path):  # not merely unreadable
                raise MergeOutputExists(f"{out} exists and is not a boom-ray merge; pass --force to replace it")
            # An earlier merge of this run whose inputs (retrained bags) or settings changed: stale.
            print(f"{out}: stale (its inputs or settings changed), merging again")
        todo.append((out, request))
    for _, request in todo:  # here, not only in the task: its errors and warnings reach the console
        validated(request)
    if todo:
        import ray  # lazy: ray, only when something is left to merge

        init_ray(cfg.ray)
        refs = [submit_merge(request, out, cfg.merge, force=True) for out, request in todo]
        try:
            manifests = ray.get(refs)
        except DiskFullError as exc:  # Ray's wrapper, whose text is the task's traceback: its one line
            raise DiskFullError(str(getattr(exc, "cause", None) or exc)) from None
        for (out, _), manifest in zip(todo, manifests):
            results[out] = manifest
    return [results[out] for out, _ in requests]


def describe(out: str, manifest: dict[str, Any]) -> str:
    if manifest.get("skipped"):
        return f"{out}: up to date ({manifest['method']}), skipped"
    o = manifest["output"]
    return (f"{out}: {manifest['method']} of {len(manifest['models'])} models, {o['tensors']} tensors, "
            f"{human_bytes(o['bytes'])} in {len(o['shards'])} shard(s), {manifest['seconds']:.1f} s")
