"""`boom run --repeats N`: seeds and folders per repeat, the `repeats` key and flag, the
aggregation over repeats with a failed one (pure), and --repeats 2 end to end on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from boom_ray.cli import build_parser
from boom_ray.cli.run import run_config
from boom_ray.config import ConfigError, validate_config
from boom_ray.eval.report import RunModel
from boom_ray.eval.report_stats import aggregate, render_headlines
from boom_ray.workflows.repeats import mean_results, one_line, repeat_configs, repeats_table, union_models


def _cfg(**extra):
    return validate_config({"workdir": "/runs/x", "corpus": {"path": "/data/c"}, **extra})


def test_one_repeat_is_the_run_itself():
    cfg = _cfg()
    (only,) = repeat_configs(cfg)
    assert only.cfg is cfg and only.name == "run" and (only.bagging_seed, only.train_seed) == (42, 42)
    assert cfg.repeats == 1 and cfg.eval.cache_dir is None


def test_each_repeat_has_its_folder_seeds_and_the_shared_cache():
    cfg = _cfg(repeats=3, bagging={"seed": 7, "ratios": [0.5, 1.0]}, train={"max_steps": 3})
    reps = repeat_configs(cfg)
    assert [r.name for r in reps] == ["repeat-0", "repeat-1", "repeat-2"]
    assert [r.cfg.workdir for r in reps] == [f"/runs/x/repeat-{k}" for k in range(3)]
    assert [(r.cfg.bagging.seed, r.cfg.train.seed) for r in reps] == [(7, 42), (8, 43), (9, 44)]
    assert [(r.bagging_seed, r.train_seed) for r in reps] == [(7, 42), (8, 43), (9, 44)]
    for r in reps:  # a repeat is one whole run of the same recipe
        assert r.cfg.repeats == 1 and r.cfg.eval.cache_dir == "/runs/x/eval-cache"
        assert r.cfg.bagging.ratios == [0.5, 1.0] and r.cfg.train.max_steps == 3
        assert r.cfg.corpus.path == "/data/c"
    uri = repeat_configs(validate_config({"workdir": "s3://b/run", "corpus": {"path": "s3://b/c"}, "repeats": 2}))
    assert [r.cfg.workdir for r in uri] == ["s3://b/run/repeat-0", "s3://b/run/repeat-1"]
    assert uri[1].cfg.eval.cache_dir == "s3://b/run/eval-cache"


def test_repeats_key_and_flag(tmp_path):
    with pytest.raises(ConfigError, match="repeats: Input should be greater than or equal to 1"):
        _cfg(repeats=0)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w"), "corpus": {"path": "c"}, "repeats": 2}))
    parse = build_parser().parse_args
    assert run_config(parse(["run", "--config", str(path)])).repeats == 2
    assert run_config(parse(["run", "--config", str(path), "--repeats", "3"])).repeats == 3
    with pytest.raises(ConfigError, match=rf"(?s){path}.*repeats: Input should be greater than or equal to 1"):
        run_config(parse(["run", "--config", str(path), "--repeats", "0"]))
    with pytest.raises(ConfigError, match="repeats: Input should be a valid integer"):
        run_config(parse(["run", "--config", str(path), "--repeats", "two"]))


def test_report_over_repeats_needs_their_summary(tmp_path):
    from boom_ray.errors import BoomError
    from boom_ray.workflows.repeats import read_summary

    with pytest.raises(BoomError, match=r"no repeats.json; run `boom run --repeats 2` first"):
        read_summary(validate_config({"workdir": str(tmp_path), "corpus": {"path": "c"}, "repeats": 2}))


def test_one_line_errors():
    assert one_line(RuntimeError("disk full\n  at /x\n")) == "RuntimeError: disk full"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(ValueError("x" * 1000))) == 300


def _suite(name, domain, values):
    units = {"statistic": "mean", "values": list(values)}
    return {"name": name, "type": "retrieval", "domain": domain, "main_metric": "ndcg@10",
            "main": float(np.mean(values)), "units": units}


def _doc(id_values, ood_values):
    suites = [_suite("ret", "in", id_values), _suite("far", "out", ood_values)]
    return {"model": "m", "suites": suites, "id_mean": suites[0]["main"], "ood_mean": suites[1]["main"],
            "mean": (suites[0]["main"] + suites[1]["main"]) / 2}


MODELS = [RunModel("base", "base", "/b", "base"), RunModel("bag100", "bag100", "/r/models/bag100", "bag"),
          RunModel("merge-ms", "ms", "/r/merges/ms", "merge")]


def test_a_failed_repeat_is_named_and_left_out_of_intervals_and_means():
    rng = np.random.default_rng(0)
    runs = []
    for k in range(3):
        base = rng.random(30)
        runs.append({"name": f"repeat-{k}", "status": "ok", "models": {
            "base": _doc(base, base), "bag100": _doc(base + 0.1, base), "merge-ms": _doc(base + 0.09, base + 0.02)}})
    broken = {"name": "repeat-3", "status": "failed", "error": "RuntimeError: worker died", "models": {
        "base": _doc(np.zeros(30), np.zeros(30)), "bag100": _doc(np.ones(30), np.ones(30))}}
    evidence = aggregate(runs + [broken], MODELS, n_boot=200)
    assert evidence == aggregate(runs, MODELS, n_boot=200) | {"failed": [
        {"name": "repeat-3", "error": "RuntimeError: worker died"}]}
    assert evidence["repeats"] == ["repeat-0", "repeat-1", "repeat-2"]
    (diff,) = evidence["differences"]
    assert (diff["model"], diff["reference"]) == ("merge-ms", "bag100")
    assert diff["line"].startswith("ms vs bag100: ID -1.0 [") and diff["line"].endswith("(3 repeats)")
    assert diff["diff"]["ood_mean"].mean == pytest.approx(0.02)
    iv = evidence["intervals"]["bag100"]["id_mean"]
    assert iv.repeats == 3 and iv.lo < iv.mean < iv.hi
    assert iv.mean == pytest.approx(np.mean([r["models"]["bag100"]["id_mean"] for r in runs]))
    lines = render_headlines(evidence)
    assert "Repeats used: 3 (repeat-0, repeat-1, repeat-2)." in lines
    assert "Left out of every interval: repeat `repeat-3` failed (RuntimeError: worker died)." in lines
    # the score table's numbers: means over the usable repeats only
    mean = mean_results([r["models"]["bag100"] for r in runs])
    assert mean["id_mean"] == pytest.approx(iv.mean) and mean["repeats"] == 3
    assert mean["suites"][1]["main"] == pytest.approx(np.mean([r["models"]["bag100"]["ood_mean"] for r in runs]))
    assert [s["name"] for s in mean["suites"]] == ["ret", "far"] and mean["suites"][0]["domain"] == "in"
    table = repeats_table([{"name": "repeat-3", "bagging_seed": 45, "train_seed": 45, "status": "failed",
                            "error": "ValueError: a | b"}])
    assert table[-1] == "| repeat-3 | 45 | 45 | failed | ValueError: a / b |"


def test_means_skip_a_score_a_repeat_lacks():
    a, b = _doc([0.2], [0.4]), _doc([0.4], [0.8])
    b["suites"][1]["main"], b["ood_mean"] = None, None
    mean = mean_results([a, b])
    assert mean["id_mean"] == pytest.approx(0.3) and mean["ood_mean"] == pytest.approx(0.4)
    assert mean["suites"][1]["main"] == pytest.approx(0.4)


def test_union_of_models_over_repeats():
    r0 = ("/w/repeat-0", [RunModel("base", "base", "/b", "base"), RunModel("merge-ms", "ms", "/w/repeat-0/merges/ms", "merge"),
                          RunModel("bag50", "bag50", "/w/repeat-0/models/bag50", "bag")])
    r1 = ("/w/repeat-1", [RunModel("base", "base", "/b", "base"), RunModel("bag50", "bag50", "/w/repeat-1/models/bag50", "bag"),
                          RunModel("bag100", "bag100", "/w/repeat-1/models/bag100", "bag")])
    models = union_models([r0, r1], "/w")
    assert [(m.key, m.kind) for m in models] == [("base", "base"), ("bag50", "bag"), ("bag100", "bag"),
                                                 ("merge-ms", "merge")]
    paths = {m.key: m.path for m in models}
    assert paths["base"] == "/b" and paths["bag50"] == "/w/repeat-*/models/bag50"
    assert paths["bag100"] == "/w/repeat-1/models/bag100"  # only one repeat has it


@pytest.mark.slow
def test_two_repeats_end_to_end_with_a_failed_repeat_then_a_resumed_rerun(ray_session, tmp_path, tiny_qwen3_path,
                                                                           capsys):
    """--repeats 2 on the tiny Qwen3 (two bags of a 24-row corpus, 2 steps each, one merge, two
    tiny suites). First repeat-1 fails at once (a file where its bags/ folder goes): the command
    exits 1, repeat-0 still runs and the report names repeat-1 and uses one repeat. Then the rerun
    skips repeat-0's stages, runs repeat-1 and evaluates the base model no more."""
    import json

    from boom_ray.cli import main as boom
    from tests.eval.conftest import make_retrieval_suite, make_sts_suite, write_jsonl
    from tests.train.bagtools import learnable_rows, run_config

    work = tmp_path / "work"
    rows = [{k: v for k, v in r.items() if v is not None} for r in learnable_rows(24, seed=0)]
    write_jsonl(tmp_path / "corpus" / "words.jsonl", rows)
    data = run_config(work, tiny_qwen3_path, bags=None, max_steps=2, global_batch_size=4, group_size=2,
                      zero_stage=1, log_every=1)
    data["train"].pop("bags")
    data |= {"corpus": {"path": str(tmp_path / "corpus")}, "bagging": {"ratios": [0.5, 1.0], "seed": 5, "num_cpus": 0.5},
             "merge": {"merges": [{"name": "multislerp", "method": "multislerp"}], "num_cpus": 0.5},
             "eval": {"batch_size": 8, "encoder_cpus": 0.5, "suites": [
                 {"path": str(make_retrieval_suite(tmp_path / "suites" / "ret", {"domain": "in"}))},
                 {"path": str(make_sts_suite(tmp_path / "suites" / "sts", {"domain": "out"}))}]}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    (work / "repeat-1").mkdir(parents=True)
    (work / "repeat-1" / "bags").write_text("not a folder")

    assert boom(["run", "--config", str(config), "--repeats", "2"]) == 1
    out = capsys.readouterr()
    assert "boom run: 1 of 2 repeats failed: repeat-1: " in out.err
    summary = json.loads((work / "repeats.json").read_text())
    assert [(e["name"], e["bagging_seed"], e["train_seed"], e["status"]) for e in summary["repeats"]] == [
        ("repeat-0", 5, 42, "ok"), ("repeat-1", 6, 43, "failed")]
    assert summary["failed"] == ["repeat-1"] and summary["repeats"][1]["error"]
    report = (work / "report.md").read_text()
    assert "Repeats used: 1 (repeat-0)." in report
    assert f"Left out of every interval: repeat `repeat-1` failed ({summary['repeats'][1]['error']})." in report
    assert report.startswith(f"# BOOM report: {work}\n\n**multislerp vs bag100: ID ")
    assert "(1 repeat)**" in report and "| repeat-1 | 6 | 43 | failed |" in report
    assert out.out.count("evaluating base") == 1
    run0 = json.loads((work / "repeat-0" / "run.json").read_text())
    assert {s["status"] for s in run0["stages"].values()} == {"done"}
    assert (work / "repeat-0" / "report.md").exists() and (work / "repeat-0" / "eval" / "base.json").exists()
    from huggingface_hub import ModelCard

    for model in ("models/bag50", "merges/multislerp"):  # evaluated models' cards carry their scores
        card = ModelCard.load(work / "repeat-0" / model / "README.md").data
        assert sorted(r.dataset_name for r in card.eval_results) == ["ret", "sts"], model
        assert card.datasets and card.datasets != ["unknown"], model
    assert sorted(p.name.split("-")[0] for p in (work / "eval-cache").iterdir()) == ["bag100", "bag50", "base", "merge"]

    (work / "repeat-1" / "bags").unlink()
    assert boom(["run", "--config", str(config), "--repeats", "2"]) == 0
    out = capsys.readouterr()
    assert "evaluating base" not in out.out  # evaluated once, for both repeats (the shared cache)
    assert out.out.count("evaluating ") == 3  # repeat-1's bag50, bag100 and merge
    run0 = json.loads((work / "repeat-0" / "run.json").read_text())
    assert [run0["stages"][s]["status"] for s in ("bag", "train", "merge")] == ["skipped"] * 3
    for k, (bag_seed, train_seed) in enumerate([(5, 42), (6, 43)]):
        rep = work / f"repeat-{k}"
        assert json.loads((rep / "bags" / "bag50" / "manifest.json").read_text())["request"]["seed"] == bag_seed
        assert json.loads((rep / "run.json").read_text())["config"]["train"]["seed"] == train_seed
    summary = json.loads((work / "repeats.json").read_text())
    assert [e["status"] for e in summary["repeats"]] == ["ok", "ok"] and summary["failed"] == []
    report = (work / "report.md").read_text()
    assert "Repeats used: 2 (repeat-0, repeat-1)." in report and "Left out" not in report
    assert "(2 repeats)**" in report and "| multislerp |" in report
    assert (work / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `boom report` with repeats in the config rewrites the same report from repeats.json and the caches
    (work / "report.md").unlink()
    assert boom(["report", "--config", str(config), "--set", "repeats=2"]) == 0
    assert "evaluating " not in capsys.readouterr().out
    assert (work / "report.md").read_text() == report
    # and so does a plain `boom report` of the config without --repeats: repeats.json says how many
    assert boom(["report", "--config", str(config)]) == 0
    assert "evaluating " not in capsys.readouterr().out
    assert (work / "report.md").read_text() == report
