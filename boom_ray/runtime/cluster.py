"""Which nodes a cluster can have, and whether a resource bundle fits one of them: checked before
work starts, because on Ray a request that fits no node waits forever without an error (an
autoscaler that cannot start such a node only logs a warning).

Node types come from the cluster launcher YAML (`ray.cluster_config`, `available_node_types`
with their `resources`), since on an autoscaling cluster what runs now says nothing about what can
be started. Without one, a local Ray's own nodes are the cluster (nothing can be added to it).
"""

from __future__ import annotations

from typing import Mapping

import yaml

from boom_ray.errors import BoomError


class ClusterError(BoomError):
    """A cluster description that cannot be read, or a request no node can hold."""


def node_types(cluster_yaml: str) -> dict[str, dict[str, float]]:
    """Node type name -> logical resources (CPU, GPU, memory, custom) from a launcher YAML."""
    try:
        with open(cluster_yaml) as f:
            spec = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"{cluster_yaml}: cannot read the cluster config ({exc})") from None
    types = spec.get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise ClusterError(f"{cluster_yaml}: no available_node_types")
    out = {}
    for name, node in types.items():
        resources = (node or {}).get("resources")
        if not isinstance(resources, dict):
            raise ClusterError(f"{cluster_yaml}: available_node_types.{name}.resources must be a mapping "
                               "(give CPU and GPU counts, so requests can be checked against them)")
        out[name] = {k: float(v) for k, v in resources.items()}
    return out


def live_nodes() -> dict[str, dict[str, float]]:
    """The running Ray's alive nodes (id -> total resources)."""
    import ray  # lazy: ray; boom plan reads node types from this module and must not load it

    return {n["NodeID"][:12]: {k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n["Alive"]}


def fits(bundle: Mapping[str, float], resources: Mapping[str, float]) -> bool:
    """Whether one node with `resources` holds `bundle` (CPU, GPU, memory, custom resources)."""
    return all(amount <= resources.get(key, 0.0) + 1e-9 for key, amount in bundle.items() if amount > 0)


def _normalise(bundle: Mapping[str, float]) -> dict[str, float]:
    names = {"cpu": "CPU", "gpu": "GPU"}
    return {names.get(k, k): float(v) for k, v in bundle.items()}


def check_bundle_fits(bundle: Mapping[str, float], what: str, cluster_yaml: str | None, *,
                      local_ray: bool) -> None:
    """Raise a one-line ClusterError naming `what` (the config keys behind the bundle) when no node
    type of `cluster_yaml` (or, without it, no node of a local Ray this process started) can hold
    `bundle`. A cluster joined by address without a launcher YAML may grow: nothing is checked."""
    if not cluster_yaml and not local_ray:
        return
    bundle = _normalise(bundle)
    nodes = node_types(cluster_yaml) if cluster_yaml else live_nodes()
    if any(fits(bundle, r) for r in nodes.values()):
        return
    where = f"node type of {cluster_yaml}" if cluster_yaml else "node of this Ray cluster"
    shown = ", ".join(f"{k}={v:g}" for k, v in sorted(bundle.items()) if v > 0)
    largest = "; ".join(f"{n}: " + ", ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if k in bundle)
                        for n, r in nodes.items())
    raise ClusterError(f"{what} asks for {shown} per trial, which no {where} holds ({largest})")
