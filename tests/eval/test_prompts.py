"""Prompts on purpose: a query gets a prompt only from the suite, the CLI or the model itself.

The pin: the public all-MiniLM-L6-v2 (it declares no prompt) scores on a retrieval suite under
boom eval exactly what a plain sentence-transformers evaluation of the same suite gives."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from boom_ray.config import ModelConfig
from boom_ray.eval.embedding import ModelEncoder
from boom_ray.eval.evaluate import evaluate_model

SUITE = os.path.join(os.path.dirname(__file__), "..", "..", "data", "wordnet-sample", "suites", "test",
                     "definition_retrieval")


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plain_st_ndcg10(model_path: str, suite_dir: str) -> float:
    """nDCG@10 of SentenceTransformer.encode on a BEIR folder, written here from scratch."""
    from sentence_transformers import SentenceTransformer

    corpus = _read_jsonl(os.path.join(suite_dir, "corpus.jsonl"))
    queries = {q["_id"]: q["text"] for q in _read_jsonl(os.path.join(suite_dir, "queries.jsonl"))}
    qrels: dict[str, dict[str, int]] = {}
    with open(os.path.join(suite_dir, "qrels", "test.tsv")) as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    model = SentenceTransformer(model_path, device="cpu")
    doc_ids = [d["_id"] for d in corpus]
    docs = model.encode([(d.get("title", "") + " " + d["text"]).strip() for d in corpus], batch_size=64,
                        normalize_embeddings=True)
    qids = [q for q in queries if q in qrels]
    qv = model.encode([queries[q] for q in qids], batch_size=64, normalize_embeddings=True)
    top = np.argsort(-(qv @ docs.T), axis=1, kind="stable")[:, :10]
    ndcgs = []
    for i, q in enumerate(qids):
        gains = np.array([qrels[q].get(doc_ids[j], 0) for j in top[i]], dtype=float)
        discounts = 1.0 / np.log2(np.arange(2, 12))
        ideal = np.sort(np.array([g for g in qrels[q].values() if g > 0], dtype=float))[::-1][:10]
        if len(ideal):
            ndcgs.append(float(gains @ discounts[:len(gains)]) / float(ideal @ discounts[:len(ideal)]))
    return float(np.mean(ndcgs))


@pytest.fixture()
def plain_suite(tmp_path):
    """The bundled definition_retrieval suite with no instruction in its suite.json."""
    dst = tmp_path / "definition_retrieval"
    shutil.copytree(SUITE, dst)
    (dst / "suite.json").write_text(json.dumps({"type": "retrieval", "domain": "in"}))
    return dst


def test_minilm_score_matches_plain_sentence_transformers(minilm_path, plain_suite):
    ours = evaluate_model(str(minilm_path), [str(plain_suite)])["suites"][0]
    theirs = plain_st_ndcg10(str(minilm_path), str(plain_suite))
    print(f"MiniLM nDCG@10: boom eval {ours['main']:.4f}, plain sentence-transformers {theirs:.4f}")
    assert ours["main"] == pytest.approx(theirs, abs=1e-4)
    # a suite instruction does reach the queries (the pin above is not vacuous)
    prompted = evaluate_model(str(minilm_path), [str(plain_suite)], default_instruction="Find the definition")
    assert abs(prompted["suites"][0]["main"] - theirs) > 1e-3
    # and "none" on a suite with an instruction gives the unprompted score again
    assert evaluate_model(str(minilm_path), [str(plain_suite)], default_instruction="Find the definition",
                          prompts="none")["suites"][0]["main"] == pytest.approx(ours["main"], abs=1e-6)


def _model_with_st_config(tmp_path, minilm_path, st_config: dict | None):
    """The MiniLM folder (files linked) with its config_sentence_transformers.json replaced."""
    dst = tmp_path / "model"
    dst.mkdir()
    for name in os.listdir(minilm_path):
        if name != "config_sentence_transformers.json":
            os.symlink(minilm_path / name, dst / name)
    if st_config is not None:
        (dst / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return str(dst)


def test_query_text_follows_what_is_declared(tmp_path, minilm_path):
    plain = ModelEncoder(str(minilm_path))
    assert plain.format_query("cat") == "cat"
    assert plain.format_query("cat", "Find it") == "Instruct: Find it\nQuery: cat"
    assert plain.document_prompt is None
    # a run config that sets the instruction for a plain base model declares it
    cfg = ModelConfig(default_instruction="Retrieve")
    assert ModelEncoder(str(minilm_path), model_cfg=cfg).format_query("cat") == "Instruct: Retrieve\nQuery: cat"
    assert ModelEncoder(str(minilm_path), model_cfg=ModelConfig(pooling="mean")).format_query("cat") == "cat"


@pytest.mark.parametrize("st_config, query, doc", [
    ({"prompts": {"query": "Instruct: Be kind\nQuery: ", "document": ""}}, "Instruct: Be kind\nQuery: cat", None),
    ({"prompts": {"query": "query: ", "passage": "passage: "}}, "query: cat", "passage: "),
    ({"prompts": {"search": "Represent this: "}, "default_prompt_name": "search"}, "Represent this: cat", None),
    ({"prompts": {}, "default_prompt_name": None}, "cat", None),
])
def test_sentence_transformers_prompts_are_read(tmp_path, minilm_path, st_config, query, doc):
    enc = ModelEncoder(_model_with_st_config(tmp_path, minilm_path, st_config))
    assert enc.format_query("cat") == query
    assert enc.document_prompt == doc
    assert ModelEncoder(enc.model_path, use_model_prompts=False).format_query("cat") == "cat"


def test_report_scores_ood_suites_with_the_advertised_prompt_and_without(tmp_path, minilm_path, kit):
    from boom_ray.config import validate_config
    from boom_ray.eval.evaluate import load_suites
    from boom_ray.eval.report import RunModel, prompt_variants

    model = _model_with_st_config(tmp_path, minilm_path, {"prompts": {"query": "query: "}})
    ret = kit.make_retrieval_suite(tmp_path / "ret", {"domain": "out", "instruction": "find"})
    ind = kit.make_sts_suite(tmp_path / "sts", {"domain": "in"})
    cfg = validate_config({"workdir": str(tmp_path / "w"), "corpus": {"path": str(tmp_path)},
                           "eval": {"suites": [{"path": str(ret)}, {"path": str(ind)}]}})
    suites = load_suites(cfg.eval.suites)
    declared = evaluate_model(model, suites, cfg.eval)
    variants = prompt_variants(RunModel("m", "m", model, "bag"), suites, declared, cfg, None)
    assert [s["name"] for s in variants["model"]["suites"]] == ["ret"]  # out-of-domain suites only
    assert [s["prompts"] for s in variants["model"]["suites"] + variants["none"]["suites"]] == ["model", "none"]
    # each variant is what evaluating with that prompt mode gives
    for mode in ("model", "none"):
        assert variants[mode]["suites"][0]["units"] == evaluate_model(model, [ret], cfg.eval, prompts=mode)["suites"][0]["units"]
    # a model that declares no prompt: "none" is the advertised-prompt evaluation itself, not rerun
    plain = prompt_variants(RunModel("b", "b", str(minilm_path), "base"), suites,
                            evaluate_model(str(minilm_path), suites, cfg.eval), cfg, None)
    assert plain["none"] is plain["model"]


def test_eval_prompts_sets_the_mode_of_a_run_and_its_variants(tmp_path, minilm_path, kit):
    """`eval.prompts: none` (the demo's): the main evaluation drops the suite instruction, and the
    report's variants reuse it where they would repeat it."""
    from boom_ray.config import validate_config
    from boom_ray.eval.evaluate import load_suites
    from boom_ray.eval.report import RunModel, eval_fingerprint, prompt_variants

    model = _model_with_st_config(tmp_path, minilm_path, {"prompts": {"query": "query: "}})
    ret = kit.make_retrieval_suite(tmp_path / "ret", {"domain": "out", "instruction": "find"})
    raw = {"workdir": str(tmp_path / "w"), "corpus": {"path": str(tmp_path)}, "eval": {"suites": [{"path": str(ret)}]}}
    declared_cfg = validate_config(raw)
    none_cfg = validate_config({**raw, "eval": {**raw["eval"], "prompts": "none"}})
    assert eval_fingerprint(none_cfg) != eval_fingerprint(declared_cfg)  # a cached declared result is not reused
    suites = load_suites(none_cfg.eval.suites)
    main = evaluate_model(model, suites, none_cfg.eval)
    assert main["suites"][0]["prompts"] == "none"
    assert main["suites"][0]["units"] == evaluate_model(model, suites, declared_cfg.eval, prompts="none")["suites"][0]["units"]
    variants = prompt_variants(RunModel("m", "m", model, "bag"), suites, main, none_cfg, None)
    assert variants["none"]["suites"] == main["suites"]
    assert variants["model"]["suites"][0]["prompts"] == "model"
    with pytest.raises(Exception, match="prompts"):
        validate_config({**raw, "eval": {**raw["eval"], "prompts": "always"}})
