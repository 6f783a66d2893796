"""k8s/rayjob.yaml is a RayJob the KubeRay v1.7.0 API server would accept, and it runs the
reference pipeline shipped in this repo.

The CRD schemas are reference data in `shared/k8s/`: beside the clone (`../shared`, as on CI)
or inside it (`shared/`).
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "k8s" / "rayjob.yaml"


def _crd_dir() -> Path:
    candidates = [REPO.parent / "shared" / "k8s", REPO / "shared" / "k8s"]
    for path in candidates:
        if (path / "ray.io_rayjobs.yaml").is_file():
            return path
    pytest.fail("KubeRay CRD schemas not found; looked in " + ", ".join(map(str, candidates)))


def _strict(schema):
    """The schema with unknown fields rejected, as `kubectl apply` (strict field validation)
    rejects them: every object with declared properties gets additionalProperties: false."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def rayjob_schema() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 1.4 MB of YAML
    crd = yaml.load((_crd_dir() / "ray.io_rayjobs.yaml").read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == "RayJob"
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(v1["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _errors(schema: dict, doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_rayjob_validates_against_the_kuberay_crd(rayjob_schema, rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert _errors(rayjob_schema, rayjob) == []


def test_the_validation_catches_a_misspelt_field_and_a_bad_type(rayjob_schema, rayjob):
    bad = copy.deepcopy(rayjob)
    bad["spec"]["shutdownAfterJobFinish"] = bad["spec"].pop("shutdownAfterJobFinishes")
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = "zero"
    errors = _errors(rayjob_schema, bad)
    assert any("shutdownAfterJobFinish" in e for e in errors), errors
    assert any(e.startswith("spec/rayClusterSpec/workerGroupSpecs/0/minReplicas") for e in errors), errors


def test_entrypoint_runs_the_reference_pipeline_of_this_repo_on_s3(rayjob):
    from boom_ray.cli.common import parse_overrides
    from boom_ray.config import load_config

    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "python"
    script = argv[1]
    assert (REPO / script).is_file() and script == "jobs/pipeline.py"
    config = argv[argv.index("--config") + 1]
    assert (REPO / config).is_file() and config == "jobs/configs/reference.yaml"
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_config(REPO / config, parse_overrides(overrides))  # the job's config is valid
    assert cfg.workdir.startswith("s3://")
    assert cfg.train.use_gpu and cfg.train.num_workers == 8


def test_runtime_env_ships_the_project_from_the_image(rayjob):
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    [workdir] = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)
    assert runtime_env["working_dir"] == workdir
    shipped = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert set(shipped["excludes"]) <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"] == shipped["env_vars"]
    [base] = re.findall(r"^ARG RAY_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-", dockerfile, re.M)
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == base


def test_cluster_is_a_cpu_head_with_autoscaling_gpu_workers_and_token_auth(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    containers = [c for c in head["template"]["spec"]["containers"]]
    groups = cluster["workerGroupSpecs"]
    for group in groups:
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1, group["groupName"]
        containers += group["template"]["spec"]["containers"]
    assert not any("nvidia.com/gpu" in c["resources"].get("limits", {}) for c in head["template"]["spec"]["containers"])
    gpu = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8" for g in gpu)
    # every pod runs the same image and gets the object-store credentials from the same Secret
    assert len({c["image"] for c in containers}) == 1
    for c in containers:
        assert {"secretRef": {"name": "boom-ray-s3"}} in c["envFrom"], c["name"]
