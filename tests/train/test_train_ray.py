"""Training on Ray Train + DeepSpeed end to end, on the 2-CPU test Ray with a tiny Qwen3.

Each test pays for real Ray Train runs (worker start-up dominates), so one run serves several
assertions: the two-bag run checks loss, concurrency, Ray Data progress and skipping.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from boom_ray.config import BoomConfig
from boom_ray.train.export import export_matches, read_export_manifest
from boom_ray.train.launch import prepare_job, train_bags
from tests.train.bagtools import learnable_rows, run_config, write_bag
from tests.train.runtools import in_thread, result as thread_result, train_and_kill_after_first_checkpoint

pytestmark = pytest.mark.slow


def _alive_train_workers() -> list[int]:
    """PIDs of live Ray Train worker actors (read from the GCS: the test Ray has no dashboard,
    which the ray.util.state API needs)."""
    from ray._private import state

    return [a["Pid"] for a in state.actors().values()
            if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE" and a["Pid"]]


@pytest.fixture(scope="module")
def two_bags(ray_session, tiny_qwen3_path, tmp_path_factory):
    """bag20 and bag100 trained at once (one 0.5-CPU worker each) while a Ray Data job runs."""
    import ray.data

    work = tmp_path_factory.mktemp("two_bags")
    write_bag(work, "bag20", {"words/a": learnable_rows(48, 1), "words/b": learnable_rows(24, 2)})
    write_bag(work, "bag100", {"words/a": learnable_rows(64, 3)})
    cfg = BoomConfig.model_validate(run_config(work, tiny_qwen3_path, ["bag20", "bag100"], max_steps=30))
    t0 = time.time()
    thread, box = in_thread(train_bags, cfg)
    most_workers = 0
    while thread.is_alive() and most_workers < 2 and time.time() - t0 < 240:
        most_workers = max(most_workers, len(_alive_train_workers()))
        time.sleep(0.5)
    data_started = time.time()
    # Ray Data's map tasks ask for a whole CPU each: the trainers must leave one free.
    total = ray.data.range(2000, override_num_blocks=8).map_batches(lambda b: {"id": b["id"] * 2}).sum("id")
    data_finished = time.time()
    results = thread_result(thread, box, timeout=300)
    return {"cfg": cfg, "results": {r.bag: r for r in results}, "most_workers": most_workers,
            "data": (data_started, data_finished, total), "elapsed": time.time() - t0}


def test_loss_falls_on_a_learnable_task(two_bags):
    for bag in ("bag20", "bag100"):
        r = two_bags["results"][bag]
        assert r.status == "trained", r.error
        history = read_export_manifest(two_bags["cfg"].workdir, bag)["loss_history"]
        first, last = history[0][1], history[-1][1]
        assert [s for s, _ in history] == [5, 10, 15, 20, 25, 30]
        assert last < 0.5 * first, history


def test_two_bags_train_at_the_same_time_and_ray_data_is_not_starved(two_bags):
    assert two_bags["most_workers"] == 2  # both bags' workers were alive together
    m = {b: read_export_manifest(two_bags["cfg"].workdir, b) for b in ("bag20", "bag100")}
    assert max(x["requested"] for x in m.values()) < min(x["finished"] for x in m.values())
    data_started, data_finished, total = two_bags["data"]
    assert total == 2 * sum(range(2000))
    assert data_finished < min(x["finished"] for x in m.values()), "Ray Data waited for the trainers"
    for bag, x in m.items():
        assert x["steps"] == 30 and x["tokens_seen"] > 0 and x["world_size"] == 1
        assert x["skipped_steps"] == 0 and two_bags["results"][bag].skipped_steps == 0  # fp32: none to skip
        assert os.path.isfile(os.path.join(two_bags["cfg"].workdir, "models", bag, "model.safetensors"))


def test_bags_whose_export_matches_are_skipped(two_bags):
    cfg = two_bags["cfg"]
    t0 = time.time()
    again = train_bags(cfg)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert time.time() - t0 < 30
    changed = BoomConfig.model_validate({**cfg.model_dump(), "train": {**cfg.train.model_dump(), "learning_rate": 1e-4}})
    assert not export_matches(cfg.workdir, "bag20", prepare_job(changed, "bag20")["request_hash"])
    # resources are not part of the request: more workers would still skip
    more = BoomConfig.model_validate({**cfg.model_dump(), "train": {**cfg.train.model_dump(), "num_workers": 2}})
    assert export_matches(cfg.workdir, "bag20", prepare_job(more, "bag20")["request_hash"])


def test_missing_bag_fails_alone_and_is_named(two_bags, capsys):
    cfg = two_bags["cfg"]
    results = train_bags(cfg, ["bag20", "bag60"])
    assert [(r.bag, r.status) for r in results] == [("bag20", "skipped"), ("bag60", "failed")]
    assert "bag60" in results[1].error and "boom bag" in results[1].error


def test_two_workers_zero3_cross_device_negatives_export_reloads(ray_session, tiny_qwen3_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from safetensors.torch import load_file

    from boom_ray.model.embedder import Embedder

    write_bag(tmp_path, "bag40", {"words": learnable_rows(48, 5)})
    # 48 rows / 8 = 6 batches an epoch, 2 accumulated per step: 6 steps run 2 epochs
    cfg = BoomConfig.model_validate(run_config(tmp_path, tiny_qwen3_path, ["bag40"], num_workers=2, zero_stage=3,
                                              max_steps=6, checkpoint_every=3, log_every=3,
                                              gradient_accumulation_steps=2))
    [result] = train_bags(cfg)
    assert result.status == "trained", result.error
    out = tmp_path / "models" / "bag40"
    manifest = json.loads((out / "boom_train.json").read_text())
    assert (manifest["world_size"], manifest["zero_stage"], manifest["steps"]) == (2, 3, 6)
    assert manifest["gradient_accumulation_steps"] == 2
    assert manifest["export"]["mode"] == "zero3-streamed"  # rank 0 consolidated parameter by parameter
    trained = load_file(out / "model.safetensors")
    base = Embedder.from_pretrained(str(tiny_qwen3_path), pooling="last").model.state_dict()
    assert set(trained) == set(base)  # full tensors, not ZeRO-3 placeholders
    assert all(trained[k].shape == base[k].shape for k in base)
    assert any(not np.allclose(trained[k].float().numpy(), base[k].float().numpy()) for k in base)
    texts = ["apple river stone", "a longer text about the ocean and the forest"]
    ours = Embedder.from_pretrained(str(out)).encode(texts)
    st = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, st, atol=1e-5)
    assert os.listdir(tmp_path / "train_runs") == []  # checkpoints (and the run's info file) cleaned


def test_killed_worker_resumes_and_ends_with_the_weights_of_an_uninterrupted_run(ray_session, tiny_qwen3_path,
                                                                                 tmp_path, capsys):
    """A worker SIGKILLed after the first checkpoint: the bag restarts once, resumes from that
    checkpoint, ends at the right step, and its export is bit for bit the export of an
    uninterrupted run. LoRA adapters (ZeRO-2) with dropout 0.1, so the adapters' state and every
    RNG state must come back from the checkpoint; the export holds merged plain weights."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from boom_ray.model.embedder import Embedder

    def cfg(work):
        write_bag(work, "bag80", {"words": learnable_rows(48, 9)})
        raw = run_config(work, tiny_qwen3_path, ["bag80"], max_steps=24, checkpoint_every=4, log_every=4,
                         max_failures=2, global_batch_size=4, group_size=2)
        raw["model"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.1}
        return BoomConfig.model_validate(raw)

    [plain] = train_bags(cfg(tmp_path / "plain"))
    killed_cfg = cfg(tmp_path / "killed")
    [result], killed = train_and_kill_after_first_checkpoint(train_bags, tmp_path / "killed", killed_cfg)
    assert killed is not None, "no checkpoint appeared before training ended"
    assert plain.status == result.status == "trained", (plain.error, result.error)
    manifest = read_export_manifest(killed_cfg.workdir, "bag80")
    assert manifest["steps"] == 24 and manifest["restarts"] == 1
    [resumed] = manifest["resumed_from"]
    assert 0 < resumed < 24 and resumed % 4 == 0
    assert [s for s, _ in manifest["loss_history"]] == list(range(4, 28, 4))
    console = capsys.readouterr().out.splitlines()  # the restart: one line on the live view's console
    assert [ln for ln in console if "resumed" in ln] == [f"[bag80] resumed from step {resumed} (restart 1)"], console

    out = tmp_path / "killed" / "models" / "bag80"
    weights = load_file(out / "model.safetensors")
    uninterrupted = load_file(tmp_path / "plain" / "models" / "bag80" / "model.safetensors")
    assert set(weights) == set(uninterrupted)
    assert all(np.array_equal(weights[k].numpy(), uninterrupted[k].numpy()) for k in weights)
    base = Embedder.from_pretrained(str(tiny_qwen3_path), pooling="last").model.state_dict()
    assert set(weights) == set(base)  # adapters merged away
    changed = [k for k in base if not np.allclose(weights[k].numpy(), base[k].numpy())]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed), changed
    texts = ["apple river stone", "ocean forest"]
    np.testing.assert_allclose(Embedder.from_pretrained(str(out)).encode(texts),
                               SentenceTransformer(str(out), device="cpu").encode(texts), atol=1e-5)
