"""build-wordnet: parsing real WordNet 3.0 lines, the corpus and suite contracts of a real build,
held-out synsets kept out of training, determinism, and the sample shipped in data/."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from boom_ray import cli
from boom_ray.demo_data.wordnet.database import WordNetError, load_wordnet, parse_data_line, read_lexnames, split_gloss
from boom_ray.demo_data.wordnet.build import build
from boom_ray.demo_data.wordnet.graph import path_similarity, siblings
from boom_ray.demo_data.wordnet.tasks import TASKS, BuildOptions, assign_splits, split_of

WORDNET = Path("/usr/share/wordnet")
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "wordnet-sample"
needs_wordnet = pytest.mark.skipif(
    not (WORDNET / "data.noun").is_file(),
    reason="Debian wordnet-base is not installed (/usr/share/wordnet); the shipped sample is "
           "checked by test_shipped_sample_* without it")
TASK_TYPES = {t.name: t.type for t in TASKS}
SUITE_FILES = {"retrieval": ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"],
               "sts": ["test.jsonl"], "classification": ["train.jsonl", "test.jsonl"],
               "clustering": ["test.jsonl"]}

# Real lines of WordNet 3.0 (data.noun, data.adj, data.verb, data.adv), gloss trailing spaces kept.
NOUN = ("00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | "
        "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)  ")
ADJ = ("00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "
       '"abounding confidence"; "whiskey galore"  ')
VERB = ("00002325 29 v 01 respire 1 005 $ 00001740 v 0000 @ 02108395 v 0000 + 03110323 a 0101 "
        "+ 00831191 n 0103 + 00830811 n 0101 01 + 02 00 | undergo the biomedical and metabolic "
        "processes of respiration by taking up oxygen and producing carbon monoxide  ")
ADV = ("00001837 02 r 03 AD 0 A.D. 0 anno_Domini 0 000 | in the Christian era; used before dates "
       'after the supposed year Christ was born; "in AD 200"  ')


# ------------------------------------------------------------------------------- parsing

def test_parse_real_lines():
    lex = read_lexnames(Path("/nonexistent"))  # falls back to WordNet 3.0's table
    noun = parse_data_line(NOUN, "n", lex)
    assert (noun.key, noun.ss_type, noun.lexname, noun.words) == ("n00001740", "n", "noun.Tops", ("entity",))
    assert noun.definition.endswith("(living or nonliving)") and noun.examples == ()
    assert noun.related("~") == ["n00001930", "n00002137", "n04424418"]

    adj = parse_data_line(ADJ, "a", lex)
    assert adj.key == "a00014358" and adj.ss_type == "s" and adj.lexname == "adj.all"
    assert adj.words == ("abounding", "galore")  # the (ip) marker is not part of the word
    assert adj.definition == "existing in abundance"
    assert adj.examples == ("abounding confidence", "whiskey galore")
    assert adj.related("&") == ["a00013887"]

    verb = parse_data_line(VERB, "v", lex)  # verb frames after the pointers are skipped
    assert verb.lexname == "verb.body" and verb.words == ("respire",)
    assert verb.related("@") == ["v02108395"] and verb.related("+")[0] == "a03110323"
    assert verb.definition.startswith("undergo the biomedical")

    adv = parse_data_line(ADV, "r", lex)
    assert adv.words == ("AD", "A.D.", "anno Domini") and adv.lexname == "adv.all"
    assert adv.definition == "in the Christian era; used before dates after the supposed year Christ was born"
    assert adv.examples == ("in AD 200",)


def test_split_gloss_edge_cases():
    assert split_gloss("inaccessible and sparsely populated;  ") == ("inaccessible and sparsely populated", ())
    assert split_gloss('accurate; "a dead-on feel"; "dead-on dialogue"- Peter S.Prescott') == (
        "accurate", ("a dead-on feel", "dead-on dialogue"))


def test_malformed_line_names_its_place():
    with pytest.raises(WordNetError, match=r"data.noun:7: not a WordNet data line"):
        parse_data_line("00001740 03 n 01 entity 0 003 ~ 00001930 n | too few pointers", "n",
                        list(read_lexnames(Path("/nonexistent"))), where="data.noun:7")


def test_missing_or_foreign_wordnet_dir(tmp_path, capsys):
    with pytest.raises(WordNetError, match="wordnet-base"):
        load_wordnet(tmp_path / "nope")
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        (tmp_path / name).write_text("  1 some other lexicon\n")
    with pytest.raises(WordNetError, match="WordNet 3.0"):
        load_wordnet(tmp_path)
    assert cli.main(["build-wordnet", "--wordnet-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "wordnet-base" in capsys.readouterr().err


@needs_wordnet
def test_offset_mismatch_is_rejected(tmp_path):
    """A data file whose offsets are not byte offsets was edited: refuse it."""
    for name in ("data.verb", "data.adj", "data.adv"):
        shutil.copy(WORDNET / name, tmp_path / name)
    with (WORDNET / "data.noun").open() as f:
        header = [line for _, line in zip(range(29), f)]
    header[0] += "  one line too many\n"  # shifts every offset after it
    (tmp_path / "data.noun").write_text("".join(header) + NOUN + "\n")
    with pytest.raises(WordNetError, match="byte offset"):
        load_wordnet(tmp_path)


# ------------------------------------------------------------------------- real database

@pytest.fixture(scope="module")
def wn():
    if not (WORDNET / "data.noun").is_file():
        pytest.skip("Debian wordnet-base is not installed (/usr/share/wordnet)")
    return load_wordnet(WORDNET)


OPTIONS = BuildOptions(seed=3, max_rows_per_task=60, suite_size=30)


@pytest.fixture(scope="module")
def built(wn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wn") / "build"
    build(WORDNET, out, OPTIONS, command="test", wn=wn)
    return out


@needs_wordnet
def test_whole_database_is_read(wn):
    counts = {p: sum(1 for k in wn.synsets if k[0] == p) for p in "nvar"}
    assert counts == {"n": 82115, "v": 13767, "a": 18156, "r": 3621}  # WordNet 3.0's synsets
    assert all(t in wn.synsets for s in wn.synsets.values() for _, t in s.pointers)
    dog = next(k for k in wn.senses["dog"] if wn[k].lexname == "noun.animal")
    assert "n02084071" == dog and "canis familiaris" in {w.lower() for w in wn[dog].words}
    assert path_similarity(wn, dog, dog) == 1.0
    assert path_similarity(wn, dog, wn[dog].related("@")[0]) == 0.5
    assert dog not in siblings(wn, dog) and siblings(wn, dog)


@needs_wordnet
def test_splits(wn):
    splits = assign_splits(wn, seed=3, holdout=0.1)
    assert splits == assign_splits(wn, seed=3, holdout=0.1)
    assert all(splits[k] != "train" for k in wn.synsets if k[0] in "vr")  # verbs, adverbs: OOD
    nouns = [splits[k] for k in wn.synsets if k[0] == "n"]
    for part in ("dev", "test"):
        assert 0.04 < nouns.count(part) / len(nouns) < 0.06
    assert assign_splits(wn, seed=4, holdout=0.1) != splits
    assert split_of("n00001740", 3, 0.1) == splits["n00001740"]


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise AssertionError(f"{path}:{n}: invalid JSON: {exc}") from None
    return rows


def check_corpus(root: Path) -> dict[str, list[dict]]:
    """Every row per the FlagEmbedding contract, with this builder's types and 7 negatives."""
    tasks = {p.stem: read_jsonl(p) for p in sorted((root / "corpus").glob("*.jsonl"))}
    assert set(tasks) == set(TASK_TYPES)
    for name, rows in tasks.items():
        assert rows, name
        for row in rows:
            assert set(row) == {"query", "pos", "neg", "prompt", "type"}, row
            assert isinstance(row["query"], str) and row["query"].strip()
            assert isinstance(row["pos"], list) and len(row["pos"]) == 1
            assert all(isinstance(t, str) and t.strip() for t in row["pos"] + row["neg"])
            assert len(row["neg"]) == 7, row  # WordNet always has enough related synsets
            assert len({t.lower() for t in row["pos"] + row["neg"]}) == 8, row
            assert row["type"] == TASK_TYPES[name] and row["prompt"].strip()
    assert all("symmetric" in r["type"] for r in tasks["synonym_paraphrase"])
    assert all(r["type"] == "symmetric_class" for r in tasks["lexname_classification"])
    return tasks


def check_suites(root: Path) -> dict[str, dict]:
    """Each suite readable in its DESIGN.md format; retrieval qrels point at real ids."""
    found = {}
    for split in ("dev", "test"):
        for folder in sorted((root / "suites" / split).iterdir()):
            meta = json.loads((folder / "suite.json").read_text())
            assert meta["domain"] in ("in", "out") and meta["instruction"].strip()
            assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == \
                sorted(SUITE_FILES[meta["type"]] + ["suite.json"])
            data = {f: read_jsonl(folder / f) for f in SUITE_FILES[meta["type"]] if f.endswith(".jsonl")}
            if meta["type"] == "retrieval":
                corpus = {d["_id"]: d for d in data["corpus.jsonl"]}
                queries = {q["_id"]: q for q in data["queries.jsonl"]}
                assert all(set(d) == {"_id", "title", "text"} and d["text"] for d in corpus.values())
                assert all(set(q) == {"_id", "text"} and q["text"] for q in queries.values())
                with (folder / "qrels/test.tsv").open() as f:
                    reader = csv.reader(f, delimiter="\t")
                    assert next(reader) == ["query-id", "corpus-id", "score"]
                    qrels = list(reader)
                assert {q for q, _, _ in qrels} == set(queries)
                assert all(d in corpus and int(s) == 1 for _, d, s in qrels)
                assert len(corpus) > len(queries)  # distractors beside the relevant documents
                data["relevant"] = [corpus[d]["text"] for _, d, _ in qrels]
            elif meta["type"] == "sts":
                rows = data["test.jsonl"]
                assert all(set(r) == {"sentence1", "sentence2", "score"} for r in rows)
                assert all(0 < r["score"] <= 1 and r["sentence1"] and r["sentence2"] for r in rows)
                assert len({r["score"] for r in rows}) >= 5  # graded, not binary
            else:
                for f in SUITE_FILES[meta["type"]]:
                    assert all(set(r) == {"text", "label"} and r["text"] and r["label"] for r in data[f])
                assert len({r["label"] for r in data["test.jsonl"]}) > 3
            found[f"{split}/{folder.name}"] = {"meta": meta, "data": data}
    assert {v["meta"]["domain"] for v in found.values()} == {"in", "out"}
    assert {v["meta"]["type"] for v in found.values()} == set(SUITE_FILES)
    assert {k.split("/", 1)[1] for k in found if k.startswith("dev/")} == \
        {k.split("/", 1)[1] for k in found if k.startswith("test/")}
    return found


def held_out_items(suite: dict) -> list[str]:
    """Texts of a suite's own (held-out) synsets; distractors and STS partners may be train."""
    kind, data = suite["meta"]["type"], suite["data"]
    if kind == "retrieval":
        return data["relevant"]
    if kind == "sts":
        return [r["sentence1"] for r in data["test.jsonl"]]
    return [r["text"] for f in ("train.jsonl", "test.jsonl") for r in data.get(f, [])]


def training_definitions(tasks: dict[str, list[dict]]) -> set[str]:
    """Every definition in the training rows, negatives included (a few WordNet definitions
    are a single word, such as "marigold", that is also a training synonym: not a leak)."""
    texts = [t for r in tasks["definition_retrieval"] for t in [*r["pos"], *r["neg"]]]
    texts += [r["query"] for name in ("reverse_dictionary", "lexname_classification") for r in tasks[name]]
    return {t.lower() for t in texts}


@needs_wordnet
def test_build_contract(built, wn):
    tasks = check_corpus(built)
    assert {n: len(r) for n, r in tasks.items()} == {n: 60 for n in TASK_TYPES}
    suites = check_suites(built)
    assert all(len(s["data"].get("queries.jsonl", [])) == 30 for s in suites.values()
               if s["meta"]["type"] == "retrieval")
    # No definition of a held-out synset (dev, test, every verb and adverb) is in the training
    # rows, negatives included, unless a training synset has the very same definition.
    splits = assign_splits(wn, OPTIONS.seed, OPTIONS.holdout)
    train_defs = {wn[k].definition.lower() for k, s in splits.items() if s == "train"}
    seen = training_definitions(tasks)
    leaked = [k for k, s in splits.items()
              if s != "train" and wn[k].definition.lower() in seen - train_defs]
    assert leaked == []
    assert not {r["pos"][0] for r in tasks["lexname_classification"]} & {"verb.motion", "adv.all"}
    for name, suite in suites.items():
        assert not {t.lower() for t in held_out_items(suite)} & seen, name
    # Out-of-domain suites are built from what training never saw.
    ood = suites["test/verb_adverb_definition_retrieval"]["data"]["queries.jsonl"]
    assert all(splits[q["_id"][1:]] == "test" and q["_id"][1] in "vr" for q in ood)
    indomain = suites["dev/definition_retrieval"]["data"]["queries.jsonl"]
    assert all(splits[q["_id"][1:]] == "dev" and q["_id"][1] in "na" for q in indomain)
    labels = {r["label"] for r in suites["dev/verb_lexname_clustering"]["data"]["test.jsonl"]}
    assert labels and all(label.startswith("verb.") for label in labels)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for sub in ("corpus", "suites")
            for p in sorted((root / sub).rglob("*")) if p.is_file()}


@needs_wordnet
def test_deterministic_for_a_seed(built, wn, tmp_path):
    build(WORDNET, tmp_path / "again", OPTIONS, command="test", wn=wn)
    assert _tree(tmp_path / "again") == _tree(built)
    other = BuildOptions(seed=4, max_rows_per_task=60, suite_size=30)
    build(WORDNET, tmp_path / "other", other, command="test", wn=wn)
    assert _tree(tmp_path / "other")["corpus/definition_retrieval.jsonl"] != \
        _tree(built)["corpus/definition_retrieval.jsonl"]


@needs_wordnet
def test_cli_build_and_overwrite_rules(wn, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["build-wordnet", "--wordnet-dir", str(WORDNET), "--out", str(out), "--seed", "1",
            "--max-rows-per-task", "12", "--suite-size", "10"]
    assert cli.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"] == {n: 12 for n in TASK_TYPES} and manifest["options"]["seed"] == 1
    assert "--max-rows-per-task 12" in (out / "README.md").read_text()
    assert "Princeton" in (out / "LICENSE").read_text()
    build(WORDNET, out, BuildOptions(seed=2, max_rows_per_task=5, suite_size=10), "again", wn=wn)
    assert json.loads((out / "manifest.json").read_text())["tasks"]["reverse_dictionary"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main([*argv[:3], "--out", str(foreign)]) == 2
    assert "not an earlier build-wordnet output" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------- shipped sample

def test_shipped_sample_is_small_and_licensed():
    assert SAMPLE.is_dir(), f"{SAMPLE} is missing; build it with the command in its README"
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size <= 5 * 1024 * 1024, f"sample is {size} bytes"
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in (SAMPLE / "LICENSE").read_text()
    readme = (SAMPLE / "README.md").read_text()
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    assert manifest["command"].startswith("boom build-wordnet") and manifest["command"] in readme


def test_shipped_sample_contracts():
    tasks = check_corpus(SAMPLE)
    assert 2000 <= sum(len(r) for r in tasks.values()) <= 6000  # a CPU demo's worth
    suites = check_suites(SAMPLE)
    seen = training_definitions(tasks)
    for name, suite in suites.items():
        assert not {t.lower() for t in held_out_items(suite)} & seen, name


@needs_wordnet
def test_shipped_sample_is_what_its_command_builds(wn, tmp_path):
    """The sample is the builder's own output: its recorded options rebuild it byte for byte."""
    options = BuildOptions(**json.loads((SAMPLE / "manifest.json").read_text())["options"])
    build(WORDNET, tmp_path / "rebuilt", options, command="test", wn=wn)
    assert _tree(tmp_path / "rebuilt") == _tree(SAMPLE)
