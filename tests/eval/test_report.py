"""`boom report` on a small fake run dir with real tiny models, and its per-model result cache."""

from __future__ import annotations

import json
import os
import shutil

import yaml

from boom_ray.cards import build as card
from boom_ray.cli import main as boom
from boom_ray.config import validate_config
from boom_ray.eval.report import write_report


def _run(tmp_path, kit, minilm_path, tiny_qwen3_path):
    suites = tmp_path / "suites"
    kit.make_retrieval_suite(suites / "ret", {"domain": "in", "instruction": "find"})
    kit.make_sts_suite(suites / "sts", {"domain": "out"})
    work = tmp_path / "work"
    shutil.copytree(minilm_path, work / "models" / "bag20")  # bag100 was never trained: left out
    shutil.copytree(tiny_qwen3_path, work / "merges" / "ms")
    for folder in (work / "models" / "bag20", work / "merges" / "ms"):  # the cards an export and a merge write
        (folder / "README.md").write_text(card.front_matter(base_model=None, tags=[], datasets=[], name=folder.name,
                                                            results=None) + "\n# " + folder.name + "\n")
    data = {"workdir": str(work), "corpus": {"path": str(tmp_path / "corpus")},
            "model": {"name_or_path": str(tiny_qwen3_path)},
            "bagging": {"ratios": [0.2, 1.0]}, "merge": {"merges": [{"name": "ms"}, {"name": "never_run"}]},
            "eval": {"suites": [{"path": str(suites / "ret")}, {"path": str(suites / "sts")}], "batch_size": 8}}
    return work, data


def test_report_cli_table_chart_and_cache(ray_session, tmp_path, kit, minilm_path, tiny_qwen3_path, capsys):
    work, data = _run(tmp_path, kit, minilm_path, tiny_qwen3_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    assert boom(["report", "--config", str(config)]) == 0
    md = (work / "report.md").read_text()
    assert "| model | ret (in, ndcg@10) | sts (out, spearman) | ID mean | OOD mean |" in md
    lines = md.splitlines()
    start = lines.index("| model | ret (in, ndcg@10) | sts (out, spearman) | ID mean | OOD mean |")
    rows = lines[start + 2:lines.index("", start)]
    assert [r.split(" | ")[0] for r in rows] == ["| base", "| bag20", "| ms"]
    # the report opens with the merge against the best (here the only) bag, with intervals
    headline = next(line for line in lines if line.startswith("**ms vs bag20: "))
    assert lines.index(headline) < start and headline.endswith("(1 repeat)**  ")
    assert "Repeats used: 1 (run)." in md and "Mean and 95 % interval per model:" in md
    assert "Out-of-domain suites by prompt" in md
    assert (work / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    caches = {p.name: p.stat().st_mtime_ns for p in (work / "eval").iterdir()}
    assert set(caches) == {"base.json", "bag20.json", "merge-ms.json"}
    assert not [p for p in work.iterdir() if ".tmp-" in p.name]
    # the bag's and the merge's cards now carry their scores and name the corpus; the base's is untouched
    from huggingface_hub import ModelCard

    for key, folder in (("bag20", work / "models" / "bag20"), ("merge-ms", work / "merges" / "ms")):
        mc = ModelCard.load(folder / "README.md")
        scores = json.loads((work / "eval" / f"{key}.json").read_text())["results"]["suites"]
        assert mc.data.datasets == [str(tmp_path / "corpus")]
        assert [(r.dataset_name, r.metric_type, r.metric_value) for r in mc.data.eval_results] == [
            (s["name"], s["main_metric"].replace("@", "_at_"), round(s["main"], 6)) for s in scores]
    assert not (tiny_qwen3_path / "README.md").exists() or "model-index" not in (tiny_qwen3_path / "README.md").read_text()

    # Unchanged models are not evaluated again; a rewritten model is.
    cfg = validate_config(data)
    os.utime(work / "models" / "bag20" / "config.json")
    out = write_report(cfg)
    iv = out["evidence"]["intervals"]["bag20"]["id_mean"]
    assert iv.lo <= out["results"]["bag20"]["id_mean"] <= iv.hi
    diff = out["evidence"]["differences"][0]
    assert (diff["model"], diff["reference"]) == ("merge-ms", "bag20")
    assert set(out["prompt_variants"]["bag20"]) == {"model", "none"}
    after = {p.name: p.stat().st_mtime_ns for p in (work / "eval").iterdir()}
    assert after["base.json"] == caches["base.json"] and after["merge-ms.json"] == caches["merge-ms.json"]
    assert after["bag20.json"] != caches["bag20.json"]
    bag = out["results"]["bag20"]
    assert bag["id_mean"] == bag["suites"][0]["main"] and bag["ood_mean"] == bag["suites"][1]["main"]
    # base and merge are the same weights: same scores
    assert out["results"]["base"]["suites"][1]["main"] == out["results"]["merge-ms"]["suites"][1]["main"]


def test_report_writes_mteb_task_results(ray_session, tmp_path, kit, minilm_path, tiny_qwen3_path):
    from pathlib import Path

    from mteb.results import TaskResult

    work, data = _run(tmp_path, kit, minilm_path, tiny_qwen3_path)
    out = write_report(validate_config(data))
    for key, results in out["results"].items():
        for entry in results["suites"]:
            res = TaskResult.from_disk(Path(work / "mteb_results" / key / f"{entry['name']}.json"))
            assert res.task_name == entry["name"] and res.get_score() == entry["main"]
