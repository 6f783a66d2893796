"""`boom build-demo-data`: a multi-task training corpus from WordNet and FOLDOC, in-domain
suites from their held-out items, and out-of-domain suites from sources never trained on
(Jargon File, V.E.R.A., The Devil's Dictionary, Debian package descriptions).

Out-of-domain items are kept disjoint from training: an item is dropped when any name it goes
by is a FOLDOC name (FOLDOC absorbed much of the Jargon File and many acronyms) or a term of a
WordNet training row, or when its query or text is a training text."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from boom_ray import __version__
from boom_ray.demo_data.common import rng_for, suite_json
from boom_ray.demo_data.demo import debian
from boom_ray.demo_data.demo.dictd import DemoDataError, dictd_files, read_articles
from boom_ray.demo_data.demo.glossary import (
    MIN_LABEL, Pool, clustering_suite, glossary_tasks, retrieval_suite, split_entries, task_rows,
)
from boom_ray.demo_data.demo.readme import licence, readme
from boom_ray.demo_data.demo.sources import Entry, devil_entry, foldoc_entry, jargon_entry, vera_entry
from boom_ray.demo_data.output import check_out, write_build
from boom_ray.demo_data.wordnet.build import licence_text as wordnet_licence
from boom_ray.demo_data.wordnet.database import WordNet, check_wordnet_dir, load_wordnet
from boom_ray.demo_data.wordnet.tasks import (
    ID_POS, SPLITS, TASKS, BuildOptions, CorpusBuilder, SuiteBuilder, assign_splits, trained_definitions,
)

BUILDER = "boom build-demo-data"
CLUSTER_LABELS = 10  # FOLDOC subjects in the clustering suite


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    role: str  # "train" (in-domain) or "ood" (suites only)
    what: str
    instruction: str = ""  # of its out-of-domain suite
    suite: str = ""


SOURCES = (
    Source("wordnet", "wordnet-base", "train", "Princeton WordNet 3.0"),
    Source("foldoc", "dict-foldoc", "train", "FOLDOC, the Free On-line Dictionary of Computing"),
    Source("jargon", "dict-jargon", "ood", "The Jargon File (hacker slang)",
           "Given a hacker jargon term, retrieve its definition", "jargon_definition_retrieval"),
    Source("vera", "dict-vera", "ood", "V.E.R.A., Virtual Entity of Relevant Acronyms",
           "Given an acronym, retrieve what it stands for", "vera_acronym_retrieval"),
    Source("devil", "dict-devil", "ood", "The Devil's Dictionary by Ambrose Bierce (1911)",
           "Given a word, retrieve its definition", "devil_definition_retrieval"),
    Source("debian", "dpkg", "ood", "Debian package descriptions of the installed packages",
           "Given a software package's one-line summary, retrieve its full description",
           "debian_description_retrieval"),
)
READERS = {"foldoc": foldoc_entry, "jargon": jargon_entry, "vera": vera_entry, "devil": devil_entry}
WORDNET_TERM_FIELDS = {"definition_retrieval": ("query",), "reverse_dictionary": ("pos", "neg"),
                       "synonym_paraphrase": ("query", "pos", "neg")}


@dataclass(frozen=True)
class Paths:
    wordnet_dir: Path = Path("/usr/share/wordnet")
    dictd_dir: Path = Path("/usr/share/dictd")
    dpkg_status: Path = debian.STATUS
    doc_dir: Path = debian.DOC


def read_dictionary(paths: Paths, source: Source) -> tuple[list[Entry], set[str]]:
    """A dictd source's clean entries, one per key (the first article wins), and every name it
    defines, skipped articles included (FOLDOC's names are kept out of the OOD suites)."""
    out: dict[str, Entry] = {}
    defined: set[str] = set()
    heads: dict[str, int] = {}
    for article in read_articles(paths.dictd_dir, source.name, source.package):
        defined.update(h.lower() for h in article.headwords)
        head = article.text.split("\n", 1)[0].strip().lower()
        defined.add(head)
        heads[head] = heads.get(head, 0) + 1
        e = READERS[source.name](article)
        if e is not None and e.key not in out:
            out[e.key] = e
    if source.name == "vera":  # an acronym with several expansions is an ambiguous query
        out = {k: e for k, e in out.items() if heads.get(k, 0) == 1}
    return list(out.values()), defined


def check_sources(paths: Paths) -> None:
    """Every input exists before any work, each error naming the package to install."""
    check_wordnet_dir(paths.wordnet_dir)
    for s in SOURCES:
        if s.name in READERS:
            dictd_files(paths.dictd_dir, s.name, s.package)
    if not paths.dpkg_status.is_file():
        raise DemoDataError(f"{paths.dpkg_status} not found: Debian package descriptions need "
                            "dpkg's status database (pass --dpkg-status)")


def wordnet_part(paths: Paths, options: BuildOptions, wn: WordNet | None) -> tuple[dict, dict, dict]:
    """WordNet's own training tasks and its in-domain suites (definition retrieval, noun STS),
    by the WordNet builder's code; its verb/adverb suites are left out (not another source)."""
    wn = wn or load_wordnet(paths.wordnet_dir)
    splits = assign_splits(wn, options.seed, options.holdout)
    corpus = CorpusBuilder(wn, splits, options)
    tasks = {f"wordnet/{t.name}": corpus.rows(t) for t in TASKS}
    trained = trained_definitions(wn, splits)
    suites = {}
    for split in SPLITS:
        sb = SuiteBuilder(wn, splits, split, options, trained)
        suites[split] = [replace(sb.retrieval("definition_retrieval", sb.pool(ID_POS), "in", usage=False),
                                 name="wordnet_definition_retrieval"),
                         replace(sb.sts("noun_definition_sts", sb.pool("n"), "in"),
                                 name="wordnet_noun_definition_sts")]
    info = {"synsets": len(wn), "split_synsets": {s: sum(1 for v in splits.values() if v == s)
                                                  for s in ("train", *SPLITS)}}
    return tasks, suites, info


def foldoc_part(entries: list[Entry], options: BuildOptions, trained: set[str]) -> tuple[dict, dict, dict]:
    """FOLDOC: training tasks from its train entries; in-domain suites from held-out entries that
    share no name and no text with a training entry, and no name with `trained` (WordNet's
    training terms)."""
    splits = split_entries(entries, options.seed, options.holdout)
    train = [e for e in entries if splits[e.key] == "train"]
    pool = Pool(train)
    train_names = {n for e in train for n in e.names} | trained
    train_texts = {e.text.lower() for e in train}
    tasks = {f"foldoc/{t.name}": task_rows(t, pool, options.seed, options.max_rows_per_task, "foldoc")
             for t in glossary_tasks("foldoc", "computing term")}
    labels = sorted((lb for lb, es in pool.by_label.items() if lb and len(es) >= MIN_LABEL),
                    key=lambda lb: (-len(pool.by_label[lb]), lb))[:CLUSTER_LABELS]
    suites, held_counts = {}, {}
    for split in SPLITS:
        held = [e for e in entries if splits[e.key] == split
                and not (e.names & train_names) and e.text.lower() not in train_texts]
        held_counts[split] = len(held)
        rng = rng_for(options.seed, "suite", split, "foldoc")
        suites[split] = [
            retrieval_suite("foldoc_definition_retrieval", "Given a computing term, retrieve its definition",
                            "in", held, Pool(held + train), options.suite_size, rng,
                            "a held-out FOLDOC term -> its definition; distractors: related FOLDOC definitions"),
            clustering_suite("foldoc_subject_clustering", "Identify the subject of a definition of a computing term",
                             "in", held, sorted(labels), options.suite_size, rng,
                             f"held-out FOLDOC definitions clustered by subject tag ({len(labels)} subjects)"),
        ]
    info = {"entries": len(entries), "train_entries": len(train), "held_out": held_counts}
    return tasks, suites, info


def wordnet_terms(tasks: dict[str, list[dict]]) -> set[str]:
    """The words of every WordNet training row's term fields (synset word lists)."""
    names: set[str] = set()
    for task, fields in WORDNET_TERM_FIELDS.items():
        for row in tasks[f"wordnet/{task}"]:
            for f in fields:
                for text in (row[f] if isinstance(row[f], list) else [row[f]]):
                    names.update(w.strip().lower() for w in text.split(","))
    return names


def ood_part(source: Source, entries: list[Entry], names: set[str], texts: set[str],
             options: BuildOptions) -> tuple[dict, dict, list[Entry]]:
    seen = names | texts
    kept = [e for e in entries if not (e.names & seen) and e.query.lower() not in seen
            and e.text.lower() not in texts]
    splits = split_entries(kept, options.seed, None)
    suites = {}
    for split in SPLITS:
        held = [e for e in kept if splits[e.key] == split]
        rng = rng_for(options.seed, "suite", split, source.name)
        suites[split] = [retrieval_suite(source.suite, source.instruction, "out", held, Pool(held),
                                         options.suite_size, rng, f"{source.what}: never trained on")]
    info = {"entries": len(entries), "dropped_overlap": len(entries) - len(kept), "kept": len(kept)}
    return suites, info, kept


def build(paths: Paths, out: Path, options: BuildOptions, command: str, wn: WordNet | None = None) -> dict:
    """Build everything and return the manifest (also written as manifest.json). `wn`: the
    already parsed WordNet of `paths.wordnet_dir`, if the caller has it."""
    started = time.time()
    check_sources(paths)
    check_out(out, BUILDER, DemoDataError)
    stanzas = debian.parse_control(paths.dpkg_status.read_text(encoding="utf-8", errors="replace"),
                                   str(paths.dpkg_status))
    versions = {st.get("Package"): st.get("Version", "") for st in stanzas
                if "installed" in st.get("Status", "").split()}
    tasks, suites, info = wordnet_part(paths, options, wn)
    sources = {"wordnet": {**info, "path": str(paths.wordnet_dir)}}
    by_name = {s.name: s for s in SOURCES}
    foldoc, foldoc_names = read_dictionary(paths, by_name["foldoc"])
    wn_terms = wordnet_terms(tasks)
    f_tasks, f_suites, sources["foldoc"] = foldoc_part(foldoc, options, wn_terms)
    tasks.update(f_tasks)
    for split in SPLITS:
        suites[split] += f_suites[split]
    # every name trained on: WordNet's training terms and every name FOLDOC defines (trained,
    # held out or skipped: FOLDOC is the in-domain source)
    names = wn_terms | foldoc_names | {n for e in foldoc for n in e.names}
    texts = {t.lower() for rows in tasks.values() for r in rows for t in [r["query"], *r["pos"], *r["neg"]]}
    for s in SOURCES:
        if s.role != "ood":
            continue
        if s.name == "debian":
            entries = debian.read_packages(stanzas, paths.doc_dir)
        else:
            entries, _ = read_dictionary(paths, s)
        o_suites, sources[s.name], kept = ood_part(s, entries, names, texts, options)
        if s.name == "debian":
            sources[s.name]["packages"] = [dict(e.meta) for e in kept]
        for split in SPLITS:
            suites[split] += o_suites[split]
    for s in SOURCES:
        sources[s.name].update(package=s.package, version=versions.get(s.package, "not installed"),
                               role="training (in-domain)" if s.role == "train" else
                               "out-of-domain suites only", what=s.what)
        if s.name in READERS:
            sources[s.name]["path"] = str(paths.dictd_dir / f"{s.name}.index")
    sources["debian"]["path"] = str(paths.dpkg_status)
    manifest = {
        "builder": BUILDER, "boom_ray_version": __version__, "command": command,
        "options": asdict(options), "sources": sources,
        "tasks": {name: len(rows) for name, rows in tasks.items()},
        "suites": {f"{split}/{s.name}": {**suite_json(s), "counts": s.counts}
                   for split in SPLITS for s in suites[split]},
    }
    write_build(out, tasks, suites, {"LICENSE": licence(paths, wordnet_licence(paths.wordnet_dir)),
                                     "README.md": readme(manifest, suites)}, manifest)
    manifest["seconds"] = round(time.time() - started, 1)
    return manifest
