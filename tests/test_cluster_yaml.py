"""cluster.yaml is accepted by Ray's own cluster-launcher schema, as `ray up` would check it."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


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
