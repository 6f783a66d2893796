"""cluster.yaml is accepted by Ray's own cluster-launcher schema, as `ray up` would check it."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)  # raises jsonschema.ValidationError on a bad config

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert any(t["node_config"]["InstanceType"].startswith(("p4d", "p5", "g6e")) for t in workers.values())
    for name, t in workers.items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, name
    assert any("pip install -e /home/ubuntu/boom-ray" in c for c in config["setup_commands"])
    assert config["file_mounts"]["/home/ubuntu/boom-ray"] == "."


def test_reference_requests_fit_the_cluster_node_types():
    """Every bundle reference.yaml asks for fits a node type of cluster.yaml, as the checks run
    before any work (boom_ray.runtime.cluster) will find."""
    from boom_ray.runtime.cluster import check_bundle_fits, node_types
    from boom_ray.config import load_config

    cfg = load_config(REPO / "jobs" / "configs" / "reference.yaml")
    assert cfg.ray.cluster_config == str(REPO / "cluster.yaml") or cfg.ray.cluster_config.endswith("cluster.yaml")
    types = node_types(str(REPO / "cluster.yaml"))
    assert types["gpu_8x_a100"]["GPU"] == 8 and types["head"] == {"CPU": 0.0}
    trial = {"cpu": cfg.sweep.trial_cpus, "gpu": cfg.eval.encoder_gpus}
    check_bundle_fits(trial, "sweep", str(REPO / "cluster.yaml"), local_ray=False)


def test_a_bundle_no_node_type_holds_is_a_one_line_error(tmp_path):
    import pytest

    from boom_ray.runtime.cluster import ClusterError, check_bundle_fits

    with pytest.raises(ClusterError, match=r"sweep.trial_cpus asks for CPU=128, GPU=1 per trial, which no node "
                                           r"type of .*cluster.yaml holds \(head: CPU=0; gpu_8x_a100: CPU=96, GPU=8"):
        check_bundle_fits({"cpu": 128, "gpu": 1}, "sweep.trial_cpus", str(REPO / "cluster.yaml"), local_ray=False)
    check_bundle_fits({"cpu": 64}, "x", None, local_ray=False)  # a cluster joined by address may grow: no check
    bad = tmp_path / "c.yaml"
    bad.write_text("available_node_types:\n  w: {min_workers: 0}\n")
    with pytest.raises(ClusterError, match="available_node_types.w.resources must be a mapping"):
        check_bundle_fits({"cpu": 1}, "x", str(bad), local_ray=False)
