"""Task filters and the task / cluster bag strategies: the pure grouping rules, then `boom bag`
on a 2-CPU local Ray (manifests list what was left out; plan.json names the bags and weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from boom_ray.config import validate_config
from boom_ray.corpus import groups
from boom_ray.corpus.bags import read_bag, read_manifest, run_bags
from boom_ray.corpus.bag_stage import run_bagging
from boom_ray.errors import BoomError


def test_filters_keep_include_matches_minus_exclude_and_say_why():
    tasks = ["retrieval/msmarco", "retrieval/quora", "sts/stsb", "scidocs-rr"]
    kept, left = groups.filter_tasks(tasks, ["retrieval/*", "scidocs*"], ["*quora", "scidocs-rr"])
    assert kept == ["retrieval/msmarco"]
    assert left == {"retrieval/quora": "corpus.exclude '*quora'", "sts/stsb": "not in corpus.include",
                    "scidocs-rr": "corpus.exclude 'scidocs-rr'"}
    assert groups.filter_tasks(tasks, None, []) == (tasks, {})


def test_groups_match_globs_and_an_empty_group_is_an_error():
    found, ungrouped = groups.match_groups(["a/x", "a/y", "b", "c"], {"alpha": ["a/*"], "bc": ["b", "c*"]})
    assert found == {"alpha": ["a/x", "a/y"], "bc": ["b", "c"]} and ungrouped == []
    assert groups.match_groups(["a", "b"], {"g": ["a"]}) == ({"g": ["a"]}, ["b"])
    with pytest.raises(groups.GroupError, match="matches no task"):
        groups.match_groups(["a"], {"g": ["zzz*"]})
    assert groups.per_task_groups(["retrieval/msmarco", "nli"]) == {"nli": ["nli"],
                                                                    "retrieval_msmarco": ["retrieval/msmarco"]}
    with pytest.raises(groups.GroupError, match="both make bag name"):
        groups.per_task_groups(["a/b", "a_b"])


def test_clustering_puts_tasks_with_shared_vocabulary_together():
    def profile(words, n=20):
        return groups.text_features(" ".join(words[(i + j) % len(words)] for j in range(5)) for i in range(n))

    code, med = ["python", "function", "error", "list", "import"], ["patient", "dose", "symptom", "fever", "drug"]
    profiles = {"code1": profile(code), "code2": profile(code[::-1]), "med1": profile(med), "med2": profile(med[1:])}
    assert groups.cluster_tasks(profiles, 2) == {"cluster0": ["code1", "code2"], "cluster1": ["med1", "med2"]}
    assert groups.cluster_tasks(profiles, 9) == {f"cluster{i}": [t] for i, t in enumerate(sorted(profiles))}
    assert np.isclose(np.linalg.norm(profiles["code1"]), 1.0)


SIZES = {"code/py": 40, "code/js": 30, "med/notes": 20, "med/qa": 10, "quora": 15}
WORDS = {"code": "python function error import list class", "med": "patient dose symptom fever drug",
         "quora": "why how what best people"}


def _corpus(root):
    for task, n in SIZES.items():
        path = root / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = WORDS[task.split("/")[0]].split()
        with path.open("w") as f:
            for i in range(n):
                q = " ".join(words[(i + j) % len(words)] for j in range(4))
                f.write(json.dumps({"query": f"{q} {i}", "pos": [f"p {task} {i}"], "neg": [f"n {i}"]}) + "\n")
    return root


def _cfg(tmp_path, corpus, **bagging):
    filters = bagging.pop("filters", {})
    return validate_config({"workdir": str(tmp_path / "work"), "corpus": {"path": str(corpus), **filters},
                            "bagging": {"num_cpus": 0.5, **bagging}})


def test_random_bags_honour_filters_and_list_left_out_tasks(ray_session, tmp_path):
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c"), ratios=[0.5, 1.0], filters={"exclude": ["quora"]})
    run_bagging(cfg, show_progress=False)
    manifest = read_manifest(str(tmp_path / "work" / "bags" / "bag100"))
    assert manifest["left_out"] == {"quora": "corpus.exclude 'quora'"}
    assert sorted(manifest["tasks"]) == ["code/js", "code/py", "med/notes", "med/qa"]
    assert manifest["rows"]["read"] == 100
    assert run_bags(cfg) == {"bag50": 0.5, "bag100": 1.0}


def test_task_strategy_with_groups_makes_one_bag_per_group(ray_session, tmp_path):
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c"), strategy="task", groups={"code": ["code/*"], "med": ["med/*"]})
    outcome = run_bagging(cfg, show_progress=False)
    assert outcome.bags == {"code": "written", "med": "written"}
    work = tmp_path / "work" / "bags"
    code = read_manifest(str(work / "code"))
    assert code["group"] == ["code/js", "code/py"] and code["rows"]["selected"] == 70
    assert code["strategy"] == "task" and code["left_out"] == {"quora": "in no bagging.groups entry"}
    assert sorted(set(read_bag(str(work / "med"))["task"].to_pylist())) == ["med/notes", "med/qa"]
    assert run_bags(cfg) == pytest.approx({"code": 70 / 115, "med": 30 / 115})
    assert run_bagging(cfg, show_progress=False).bags == {"code": "up to date", "med": "up to date"}
    with pytest.raises(BoomError, match="no bags of strategy 'cluster'"):
        run_bags(validate_config({**cfg.model_dump(mode="json", exclude_unset=True),
                                  "bagging": {"strategy": "cluster"}}))


def test_reused_grouped_bags_still_obey_the_bad_row_budget(ray_session, tmp_path):
    from boom_ray.corpus.bag_stage import TooManyBadRows

    corpus = _corpus(tmp_path / "c")
    with (corpus / "quora.jsonl").open("a") as f:
        f.write('{"query": "broken\n')
    lenient = _cfg(tmp_path, corpus, strategy="task", filters={"max_bad_fraction": 0.5})
    assert run_bagging(lenient, show_progress=False).quarantined == 1
    strict = _cfg(tmp_path, corpus, strategy="task")
    with pytest.raises(TooManyBadRows, match="1 of 116 rows"):
        run_bagging(strict, show_progress=False)


def test_per_task_and_computed_cluster_bags(ray_session, tmp_path):
    corpus = _corpus(tmp_path / "c")
    per_task = _cfg(tmp_path, corpus, strategy="task", filters={"include": ["code/*", "med/*"]})
    run_bagging(per_task, show_progress=False)
    assert list(run_bags(per_task)) == ["code_js", "code_py", "med_notes", "med_qa"]
    assert read_bag(str(tmp_path / "work" / "bags" / "code_py")).num_rows == 40
    cluster = _cfg(tmp_path, corpus, strategy="cluster", num_clusters=3)
    run_bagging(cluster, show_progress=False)
    plan = json.loads((tmp_path / "work" / "bags" / "plan.json").read_text())
    assert plan["bags"] == {"cluster0": ["code/js", "code/py"], "cluster1": ["med/notes", "med/qa"],
                            "cluster2": ["quora"]}
    assert sum(plan["weights"].values()) == pytest.approx(1.0)
