"""`boom plan`: node counts, memory, steps and cost from the shipped configs; bad input; no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from boom_ray.plan import inputs as plan_inputs
from boom_ray.cli import main
from boom_ray.plan.estimate import TrainShape, memory_estimate
from boom_ray.plan.inputs import KNOWN_MODELS, load_model_shape, read_node_types

REPO = Path(__file__).resolve().parents[2]
REFERENCE = str(REPO / "jobs" / "configs" / "reference.yaml")
CLUSTER = str(REPO / "cluster.yaml")
SAMPLE_CORPUS = REPO / "data" / "wordnet-sample" / "corpus"


def _plan(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _local(tmp_path: Path) -> list[str]:
    """reference.yaml with a local work dir and the WordNet sample as corpus: offline, each plan of its s3:// paths waits
    ~6 s for the bucket not to answer. The plan is the same; test_reference_is_tight_... keeps s3://."""
    return ["--set", f"workdir={tmp_path / 'work'}", "--set", f"corpus.path={SAMPLE_CORPUS}"]


def _row(out: str, label: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(label))
    return line[len(label):].split()


def test_reference_on_the_cluster(capsys, tmp_path):
    code, out, _ = _plan(capsys, "--config", REFERENCE, "--cluster", CLUSTER, "--corpus-rows", "2800000",
                         *_local(tmp_path))
    assert code == 0
    assert "8 workers x {CPU: 8, GPU: 1} per bag; 5 bags at once = 40 workers" in out
    assert "gpu_8x_a100    8 workers per node -> 5 nodes" in out
    assert "gpu_1x         1 workers per node -> 40 nodes (more than its max_workers" in out
    assert "cpu_data       cannot hold one training worker" in out
    assert "sweep    {CPU: 8, GPU: 1} per trial" in out  # trial_cpus + the GPU it embeds on
    assert "sweep trials fit on: gpu_8x_a100, gpu_1x" in out
    assert "as configured (mini-batches of 8)" in out and "without mini-batches" in out
    assert _row(out, "fits") == ["yes", "NO"]  # on the cluster's 40 GB A100s
    assert "A100 on gpu_8x_a100" in out
    bag100 = _row(out, "bag100")
    assert bag100[0] == "2,800,000" and bag100[2] == "10,937"  # 2.8M rows / 256 per global batch
    assert int(bag100[3].replace(",", "")) == 10937 * 256 * (512 + 8 * 512)


def test_a_sweep_trial_no_node_type_holds_is_named(capsys, tmp_path):
    code, out, _ = _plan(capsys, "--config", REFERENCE, "--cluster", CLUSTER, "--corpus-rows", "1000",
                         "--set", "sweep.trial_cpus=128", *_local(tmp_path))  # more than any node type has
    assert code == 0
    assert "sweep trials fit on: no node type (sweep.trial_cpus / eval.encoder_gpus ask for {CPU: 128, GPU: 1}" in out


def test_reference_is_tight_on_an_80gb_gpu_without_mini_batches(capsys, monkeypatch, tmp_path):
    corpus_reads = []
    monkeypatch.setattr(plan_inputs, "corpus_rows", lambda cfg: corpus_reads.append(cfg) or ({}, {}))
    code, out, _ = _plan(capsys, "--config", REFERENCE, "--gpu-memory", "80GiB")
    assert code == 0
    assert "cannot read the corpus" in out  # s3:// is not reachable here: memory is still planned
    assert corpus_reads == []  # the work dir's bucket did not answer: the corpus on it is not tried
    assert _row(out, "fits") == ["yes", "yes"]
    total = [float(v) for v in _row(out, "total")[::2]]
    assert 0.75 * 80 < total[1] <= 0.9 * 80 and total[0] < 0.5 * total[1]  # tight without mini-batches
    code, out, _ = _plan(capsys, "--config", REFERENCE, "--gpu-memory", "48GiB", "--set", "train.mini_batch_size=null",
                         *_local(tmp_path))
    assert "as configured (no mini-batches)" in out and _row(out, "fits")[0] == "NO"


def test_memory_parts_follow_zero_stage_and_world():
    shape = KNOWN_MODELS["Qwen/Qwen3-4B"]
    assert 4.0e9 < shape.params < 4.05e9  # Qwen3-4B: 4.02 B
    base = dict(rows=32, group=8, query_len=512, doc_len=512, precision="bf16", world=8, checkpointing=True)
    parts = {s: memory_estimate(shape, TrainShape(zero_stage=s, **base)).parts for s in (0, 1, 2, 3)}
    p = shape.params
    assert parts[0]["optimizer"] == 12 * p and parts[1]["optimizer"] == 12 * p / 8
    assert parts[1]["gradients"] == 2 * p and parts[2]["gradients"] == 2 * p / 8
    assert parts[2]["weights"] == 2 * p and parts[3]["weights"] < 2 * p / 8 + 2 * shape.embedding_params + 1
    mini = memory_estimate(shape, TrainShape(zero_stage=3, mini_batch_size=4, **base))
    assert mini.parts["activations"] < parts[3]["activations"] / 7
    # several backward passes per optimizer step under bf16 are summed in fp32 (ds_config)
    assert mini.parts["gradients"] == 4 * p / 8
    accumulating = memory_estimate(shape, TrainShape(zero_stage=2, accumulation=4, **base)).parts
    assert accumulating["gradients"] == 4 * p / 8
    fp32 = memory_estimate(shape, TrainShape(zero_stage=2, accumulation=4, **{**base, "precision": "fp32"})).parts
    assert fp32["gradients"] == 4 * p / 8


def test_parameter_counts_match_the_real_models(tiny_qwen3_path, minilm_path):
    from transformers import AutoModel

    for path in (tiny_qwen3_path, minilm_path):
        real = sum(t.numel() for t in AutoModel.from_pretrained(path).parameters())
        assert load_model_shape(str(path)).params == real, path


def test_counts_rows_from_the_corpus(capsys, tmp_path):
    cfg = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    cfg["workdir"] = str(tmp_path / "work")
    cfg["corpus"]["path"] = str(REPO / "data" / "wordnet-sample" / "corpus")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    code, out, _ = _plan(capsys, "--config", str(tmp_path / "run.yaml"), "--tokens-per-second", "1000")
    assert code == 0 and "(4 files)" in out
    # 4 tasks of 800 rows, global batch 32: two retrieval tasks of 25 batches, two symmetric ones
    # of 50 half batches each (BagFeed's plan_batches on the same counts)
    assert _row(out, "bag100")[:3] == ["3,200", "corpus", "150"]
    assert _row(out, "bag20")[0] == "640"


def _cpu_only_cluster(tmp_path: Path) -> str:
    raw = yaml.safe_load(Path(CLUSTER).read_text())
    raw["available_node_types"] = {k: v for k, v in raw["available_node_types"].items()
                                   if k in ("head", "cpu_data")}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_no_node_type_holds_a_worker_is_a_one_line_error(capsys, tmp_path):
    code, out, err = _plan(capsys, "--config", REFERENCE, "--cluster", _cpu_only_cluster(tmp_path), *_local(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("boom plan: error: train.gpus_per_worker:"), lines
    assert "cpu_data" in lines[0]
    assert [n.name for n in read_node_types(_cpu_only_cluster(tmp_path))] == ["cpu_data"]


def test_unknown_hub_model_needs_model_config(capsys, tmp_path, tiny_qwen3_path):
    args = ["--config", REFERENCE, "--gpu-memory", "80GiB", "--set", "model.name_or_path=someone/unknown-model",
            *_local(tmp_path)]
    code, _, err = _plan(capsys, *args)
    assert code == 2 and "model.name_or_path" in err and "--model-config" in err
    code, out, _ = _plan(capsys, *args, "--model-config", str(tiny_qwen3_path / "config.json"))
    assert code == 0 and "hidden 64 x 2 layers" in out


def test_bad_mini_batch_size_is_a_config_error(capsys):
    code, _, err = _plan(capsys, "--config", REFERENCE, "--set", "train.mini_batch_size=5")
    assert code == 2 and "train.mini_batch_size" in err and "per-rank batch" in err


def test_plan_imports_neither_torch_nor_ray(tmp_path):
    code = ("import sys\nfrom boom_ray.cli import main\n"
            f"rc = main(['plan', '--config', {REFERENCE!r}, '--cluster', {CLUSTER!r}, '--corpus-rows', '1000', "
            f"'--set', 'workdir={tmp_path}'])\n"
            "bad = [m for m in ('torch', 'ray', 'transformers', 'deepspeed') if m in sys.modules]\n"
            "assert rc == 0 and not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
