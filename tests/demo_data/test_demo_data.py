"""build-demo-data: cleaning real dictd and dpkg records, a small real build (in- and out-of-
domain suites from disjoint sources and headwords), errors for missing sources, and the
sample shipped in data/demo-sample that the demo config points at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from boom_ray import cli
from boom_ray.corpus.reader import row_problem
from boom_ray.demo_data.demo import SOURCES, DemoDataError, Paths, build
from boom_ray.demo_data.demo.debian import copyright_licence, long_description, package_entries, parse_control
from boom_ray.demo_data.demo.dictd import Article, decode_number, parse_index_line, read_articles
from boom_ray.demo_data.demo.sources import clip, devil_entry, foldoc_entry, jargon_entry, unmark, vera_entry
from boom_ray.demo_data.wordnet import BuildOptions, load_wordnet
from boom_ray.eval.suites import load_suite

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "demo-sample"
PATHS = Paths()
PACKAGES = {"wordnet-base": PATHS.wordnet_dir / "data.noun", "dpkg": PATHS.dpkg_status,
            **{s.package: PATHS.dictd_dir / f"{s.name}.index" for s in SOURCES if s.name not in ("wordnet", "debian")}}
MISSING = sorted(pkg for pkg, path in PACKAGES.items() if not path.is_file())
needs_sources = pytest.mark.skipif(
    bool(MISSING), reason=f"Debian packages not installed: {', '.join(MISSING)} (apt-get install them; "
                          "scripts/setup-venv.sh does as root); the shipped sample is checked without them")
ID_SOURCES = ("wordnet", "foldoc")
OOD_SOURCES = ("jargon", "vera", "devil", "debian")


# ----------------------------------------------------------------------------- parsing

def test_dictd_index_numbers_and_bad_line():
    assert decode_number("A") == 0 and decode_number("BA") == 64 and decode_number("Gb9L") == 6 * 64**3 + 27 * 64**2 + 61 * 64 + 11
    assert parse_index_line("!!!batch\tBCy\tGo\n", "foldoc.index:2") == ("!!!batch", 4274, 424)
    with pytest.raises(DemoDataError, match=r"foldoc.index:9: not a dictd index line"):
        parse_index_line("only a headword\n", "foldoc.index:9")


FOLDOC = ("Text To Speech\nTTS\n\n   <application> (TTS) Automatic {conversion} of text streams to\n"
          "   voice , as {Festival} does.  [{Jargon File}]\n\n   {Festival (http://festvox.org/)}.\n\n   [Details?]\n\n   (1997-05-11)\n\n")


def test_foldoc_article_is_cleaned():
    e = foldoc_entry(Article(("text to speech", "tts"), FOLDOC, "foldoc.index:1"))
    assert (e.query, e.label) == ("Text To Speech", "application")
    assert e.text == "(TTS) Automatic conversion of text streams to voice, as Festival does."
    assert e.names == {"text to speech", "tts"} and e.related == ("conversion", "festival")
    senses = "Foo\n\n   1. <language> A language for {frobbing} widgets in parallel.\n\n   2. <jargon> Bar.\n"
    assert foldoc_entry(Article(("foo",), senses, "x")).text == "A language for frobbing widgets in parallel."
    assert foldoc_entry(Article(("x",), "X\n\n   <jargon> See {Y}.\n\n   (1995-01-01)\n", "x")) is None


def test_jargon_vera_devil_articles():
    jargon = ("-fu\n\n\n    [common; generalized from kung-fu] Combining form denoting expert practice\n"
              "    of a skill. “That's going to take some serious {\n    code-fu}.”\n")
    e = jargon_entry(Article(("-fu",), jargon, "j:1"))
    assert e.text == "Combining form denoting expert practice of a skill. “That's going to take some serious code-fu.”"
    v = vera_entry(Article(("crfvc",), 'CRFVC\n       Connection Related Function Virtual Channel (UPC, UNI), "CRF(VC)"\n', "v"))
    assert (v.query, v.text) == ("CRFVC", "Connection Related Function Virtual Channel")
    assert vera_entry(Article(("xrip",), "XRIP\n       eXtended ??? Routing Information Protocol\n", "v")) is None
    devil = ("DUEL, n.  A formal ceremony preliminary to the reconciliation of two\nenemies.  Great skill.\n\n"
             "    That dueling's a gentlemanly vice\n")
    d = devil_entry(Article(("duel",), devil, "d"))
    assert (d.query, d.label, d.text) == ("duel", "n.", "A formal ceremony preliminary to the reconciliation of two enemies. Great skill.")
    assert unmark("a {b (http://x.org/)} {c} <me@x.org> d") == "a c d"
    assert clip("One two. Three four five six seven.", 20) == "One two."
    assert clip("One two three four five six seven. Eight.", 20) == ""  # too long: skipped


def test_debian_records():
    status = ("Package: libfoo1\nStatus: install ok installed\nSource: foo\nVersion: 1.0-1\nSection: libs\n"
              "Description: foo library - runtime\n Foo frobs widgets in parallel and quickly.\n .\n"
              " This package contains the shared library.\n\n"
              "Package: foo\nStatus: install ok installed\nVersion: 1.0-1\nDescription: foo frobber tool\n"
              " Foo frobs widgets in parallel, from the command line.\n\n"
              "Package: bar\nStatus: deinstall ok config-files\nDescription: gone\n gone gone gone gone gone\n")
    entries = package_entries(parse_control(status, "status"))
    assert [(e.key, e.query) for e in entries] == [("foo", "foo frobber tool")]  # one per source; installed only
    assert long_description(" A b c.\n .\n D e.") == "A b c. D e."
    with pytest.raises(DemoDataError, match=r"status:1: continuation line"):
        parse_control(" stray\n", "status")
    dep5 = "Format: x\n\nFiles: debian/*\nLicense: GPL-2+\n\nFiles: *\nCopyright: me\nLicense: Expat\n"
    assert copyright_licence(dep5) == "Expat"
    assert copyright_licence("Released under the GNU General Public License.") == \
        "free-form copyright file mentioning: GPL"


# ------------------------------------------------------------------------------ errors

def test_missing_dictd_file_names_its_package(tmp_path, capsys):
    if not (PATHS.wordnet_dir / "data.noun").is_file():
        pytest.skip("Debian wordnet-base is not installed (checked first)")
    with pytest.raises(DemoDataError, match=r"foldoc.index not found: install Debian's dict-foldoc"):
        read_articles(tmp_path, "foldoc", "dict-foldoc")
    argv = ["build-demo-data", "--out", str(tmp_path / "o"), "--dictd-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "apt-get install dict-foldoc" in capsys.readouterr().err
    (tmp_path / "foldoc.index").write_text("term\tA\tZZZZ\n")
    (tmp_path / "foldoc.dict.dz").write_bytes(b"")
    import gzip
    (tmp_path / "foldoc.dict.dz").write_bytes(gzip.compress(b"short"))
    with pytest.raises(DemoDataError, match=r"foldoc.index:1: entry 'term' points past the end"):
        read_articles(tmp_path, "foldoc", "dict-foldoc")


@needs_sources
def test_refuses_to_overwrite_a_foreign_folder(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(["build-demo-data", "--out", str(foreign)]) == 2
    assert "not an earlier build-demo-data output" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


# -------------------------------------------------------------------------- real build

@pytest.fixture(scope="module")
def wn():
    if MISSING:
        pytest.skip(f"Debian packages not installed: {', '.join(MISSING)}")
    return load_wordnet(PATHS.wordnet_dir)


@pytest.fixture(scope="module")
def built(wn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "build"
    build(PATHS, out, BuildOptions(seed=5, max_rows_per_task=40, suite_size=30), command="test", wn=wn)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def corpus_of(root: Path) -> dict[str, list[dict]]:
    tasks = {str(p.relative_to(root / "corpus").with_suffix("")): read_jsonl(p)
             for p in sorted((root / "corpus").rglob("*.jsonl"))}
    for name, rows in tasks.items():
        problems = [(name, n, row_problem(r)) for n, r in enumerate(rows, 1) if row_problem(r)]
        assert not problems, problems[:3]  # what `boom bag` would quarantine
    return tasks


def suites_of(root: Path) -> dict[str, dict]:
    """Every suite loads with the evaluator's own reader; retrieval texts kept for the checks."""
    found = {}
    for folder in sorted((root / "suites").glob("*/*")):
        suite = load_suite(folder)
        meta = json.loads((folder / "suite.json").read_text())
        assert meta["instruction"].strip() and suite.domain == meta["domain"]
        entry = {"meta": meta, "suite": suite}
        if meta["type"] == "retrieval":
            entry["queries"] = [q["text"] for q in read_jsonl(folder / "queries.jsonl")]
            entry["docs"] = [d["text"] for d in read_jsonl(folder / "corpus.jsonl")]
        found[f"{folder.parent.name}/{folder.name}"] = entry
    return found


def check_split(root: Path, tasks: dict[str, list[dict]], suites: dict[str, dict]) -> None:
    """Training sources only in the corpus; OOD suites from other sources, with no headword
    (query) and no text that training saw; held-out FOLDOC items never trained on."""
    assert {t.split("/")[0] for t in tasks} == set(ID_SOURCES)
    for name, s in suites.items():
        source = name.split("/")[1].split("_")[0]
        assert s["meta"]["domain"] == ("in" if source in ID_SOURCES else "out"), name
    assert {n.split("/")[1].split("_")[0] for n in suites} == set(ID_SOURCES + OOD_SOURCES)
    texts = {t.lower() for rows in tasks.values() for r in rows for t in [r["query"], *r["pos"], *r["neg"]]}
    terms = set()  # names the model trained on: the term fields of the term tasks
    for task, rows in tasks.items():
        kind = task.split("/")[1]
        fields = {"definition_retrieval": ["query"], "term_definition": ["query"],
                  "reverse_dictionary": ["pos", "neg"], "synonym_paraphrase": ["query", "pos", "neg"]}.get(kind, [])
        for r in rows:
            for f in fields:
                for t in (r[f] if isinstance(r[f], list) else [r[f]]):
                    terms |= {t.lower(), *(w.strip().lower() for w in t.split(",") if task.startswith("wordnet/"))}
    manifest = json.loads((root / "manifest.json").read_text())
    for name, s in suites.items():
        if s["meta"]["domain"] == "out":
            assert not {q.lower() for q in s["queries"]} & (terms | texts), name  # headwords disjoint
            assert not {d.lower() for d in s["docs"]} & texts, name
        elif name.endswith("foldoc_definition_retrieval"):
            assert not {q.lower() for q in s["queries"]} & terms, name
    assert manifest["sources"]["jargon"]["dropped_overlap"] > 0  # FOLDOC absorbed Jargon entries
    for split in ("dev", "test"):  # dev and test hold different items
        for src in ("devil", "vera"):
            a, b = (set(suites[f"{sp}/{src}_{'definition' if src == 'devil' else 'acronym'}_retrieval"]["queries"])
                    for sp in ("dev", "test"))
            assert not a & b


@needs_sources
def test_build_contract(built):
    tasks = corpus_of(built)
    assert {n: len(r) for n, r in tasks.items()} == {
        **{f"wordnet/{t}": 40 for t in ("definition_retrieval", "reverse_dictionary",
                                         "lexname_classification", "synonym_paraphrase")},
        **{f"foldoc/{t}": 40 for t in ("term_definition", "reverse_dictionary", "subject_classification")}}
    assert all(len(r["neg"]) == 7 for r in tasks["foldoc/term_definition"])
    suites = suites_of(built)
    assert all(len(s["queries"]) == 30 for s in suites.values() if "queries" in s)
    check_split(built, tasks, suites)
    manifest = json.loads((built / "manifest.json").read_text())
    assert all(manifest["sources"][s.name]["version"] != "not installed" for s in SOURCES)
    assert all(p["licence"] for p in manifest["sources"]["debian"]["packages"])
    assert "GNU Free Documentation License" in (built / "LICENSE").read_text()


# ----------------------------------------------------------------------- shipped sample

def test_shipped_sample_loads_and_is_split_by_source():
    assert SAMPLE.is_dir(), f"{SAMPLE} is missing; build it with the command in its README"
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size <= 5 * 1024 * 1024, f"sample is {size} bytes"
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    assert manifest["command"].startswith("boom build-demo-data") and manifest["command"] in \
        (SAMPLE / "README.md").read_text()
    tasks = corpus_of(SAMPLE)
    assert 2000 <= sum(len(r) for r in tasks.values()) <= 6000  # a CPU demo's worth
    suites = suites_of(SAMPLE)
    check_split(SAMPLE, tasks, suites)
    assert all(120 <= len(s["queries"]) <= 500 for s in suites.values() if "queries" in s)


def test_demo_config_uses_the_sample():
    cfg = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    assert cfg["corpus"]["path"] == "data/demo-sample/corpus"
    refs = [s["path"] for s in cfg["eval"]["suites"] + cfg["eval"]["dev_suites"]]
    assert all(r.startswith("data/demo-sample/suites/") and (REPO / r / "suite.json").is_file() for r in refs)
    domains = {load_suite(REPO / s["path"]).domain for s in cfg["eval"]["suites"]}
    assert domains == {"in", "out"}


def _tree(root: Path) -> dict[str, bytes]:
    """Corpus and suites, without the Debian suites (they depend on the installed packages)."""
    return {str(p.relative_to(root)): p.read_bytes() for sub in ("corpus", "suites")
            for p in sorted((root / sub).rglob("*")) if p.is_file() and "/debian_" not in str(p)}


@needs_sources
def test_shipped_sample_is_what_its_command_builds(wn, tmp_path):
    """Rebuilt with its recorded options from the same package versions, the sample comes out
    byte for byte (the Debian suites aside: they follow what is installed)."""
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    rebuilt = tmp_path / "rebuilt"
    built = build(PATHS, rebuilt, BuildOptions(**manifest["options"]), command="test", wn=wn)
    versions = {n: s["version"] for n, s in manifest["sources"].items() if n != "debian"}
    if versions != {n: s["version"] for n, s in built["sources"].items() if n != "debian"}:
        pytest.skip(f"installed source packages differ from the sample's: {versions}")
    assert _tree(rebuilt) == _tree(SAMPLE)
