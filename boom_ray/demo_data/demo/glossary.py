"""Training tasks and evaluation suites from glossary entries (`sources.Entry`): term ->
definition retrieval, its reverse, subject classification, and retrieval / clustering suites
with hard distractors. Pure: entries in, rows and `Suite`s out.

Hard negatives and distractors are, in order: entries the item cross-references, entries
sharing its rarer words (`Neighbours`), entries of its label, then any; never the item's own
text, and, for training, only training entries."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from boom_ray.demo_data.common import Suite, rng_for, sample, unit_hash
from boom_ray.demo_data.demo.sources import Entry

NEGATIVES = 7
MIN_LABEL = 40  # a subject needs this many training entries to be a classification label
_WORD = re.compile(r"[a-z][a-z0-9+#-]{3,}")
_STOP = frozenset("""also been being from have into more most only other over same some such than
that their them then there these they this those used uses using very were what when where which
while with would your about after before between both each many much must through under upon""".split())


def split_entries(entries: Iterable[Entry], seed: int, holdout: float | None) -> dict[str, str]:
    """key -> `train` / `dev` / `test` by a hash of (seed, source, key). `holdout` None: an
    out-of-domain source, never trained on, half dev and half test."""
    out = {}
    for e in entries:
        u = unit_hash(seed, f"{e.source}:{e.key}")
        if holdout is None:
            out[e.key] = "dev" if u < 0.5 else "test"
        else:
            out[e.key] = "dev" if u < holdout / 2 else "test" if u < holdout else "train"
    return out


def tokens(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


class Neighbours:
    """Entries sharing rare words with a text, best first (summed idf of the shared words;
    words in more than `max_df` entries are ignored, so search stays cheap)."""

    def __init__(self, entries: list[Entry], max_df: int = 60):
        self.entries = entries
        self.index: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(entries):
            for w in tokens(e.text):
                self.index[w].append(i)
        n = max(len(entries), 1)
        self.idf = {w: math.log(n / len(ids)) for w, ids in self.index.items() if len(ids) <= max_df}

    def of(self, text: str, k: int) -> list[Entry]:
        score: dict[int, float] = defaultdict(float)
        for w in sorted(tokens(text)):  # sorted: a float sum in set order depends on the hash seed
            for i in self.index.get(w, ()) if w in self.idf else ():
                score[i] += self.idf[w]
        best = sorted(score, key=lambda i: (-score[i], i))
        return [self.entries[i] for i in best[:k + 1]]


class Pool:
    """Entries a row or suite may draw other texts from, with their lookups."""

    def __init__(self, entries: list[Entry]):
        self.entries = sorted(entries, key=lambda e: e.key)
        self.by_name: dict[str, Entry] = {}
        for e in self.entries:
            for name in sorted(e.names):
                self.by_name.setdefault(name, e)
        self.by_label: dict[str, list[Entry]] = defaultdict(list)
        for e in self.entries:
            self.by_label[e.label].append(e)
        self.neighbours = Neighbours(self.entries)

    def others(self, e: Entry, rng, want: int) -> list[Entry]:
        """Up to `want` * 4 candidates other than `e`, hardest first (see the module doc)."""
        linked = [self.by_name[n] for n in e.related if n in self.by_name]
        near = self.neighbours.of(e.text, want)
        same = self.by_label.get(e.label, []) if e.label else []
        same = rng.sample(same, min(len(same), want * 2))
        anyone = rng.sample(self.entries, min(len(self.entries), want * 2))
        out, seen = [], {e.key}
        for o in linked + near + same + anyone:
            if o.key not in seen:
                seen.add(o.key)
                out.append(o)
        return out


def _pick(cands: list[Entry], text: Callable[[Entry], str], exclude: set[str], n: int) -> list[str]:
    out: list[str] = []
    for o in cands:
        t = text(o)
        if t.lower() not in exclude:
            exclude.add(t.lower())
            out.append(t)
            if len(out) == n:
                break
    return out


@dataclass(frozen=True)
class GlossaryTask:
    name: str  # file name under corpus/<source>/
    type: str
    prompt: str
    describe: str


def glossary_tasks(source: str, thing: str) -> tuple[GlossaryTask, ...]:
    return (
        GlossaryTask("term_definition", "retrieval", f"Given a {thing}, retrieve its definition",
                     f"a {thing} -> its definition; negatives: definitions of cross-referenced, "
                     "word-sharing and same-subject entries"),
        GlossaryTask("reverse_dictionary", "retrieval", f"Given a definition, retrieve the {thing} it defines",
                     f"a definition -> its {thing}; negatives: the terms of related entries"),
        GlossaryTask("subject_classification", "symmetric_class",
                     f"Classify a definition of a {thing} into its subject",
                     f"a definition -> its {source.upper()} subject tag (`<networking>`); "
                     f"negatives: other subjects ({MIN_LABEL}+ training entries each)"),
    )


def task_rows(task: GlossaryTask, train: Pool, seed: int, n: int | None, source: str) -> list[dict]:
    """Rows of one glossary task from training entries only, negatives included."""
    rng = rng_for(seed, "task", source, task.name)
    entries = train.entries
    labels = sorted(lb for lb, es in train.by_label.items() if lb and len(es) >= MIN_LABEL)
    if task.type.endswith("_class"):
        entries = [e for e in entries if e.label in labels]
    keys = {e.key: e for e in entries}
    rows = []
    for key in sample(keys, n, rng):
        e = keys[key]
        r = rng_for(seed, source, task.name, key)
        if task.name == "term_definition":
            row = {"query": e.query, "pos": [e.text],
                   "neg": _pick(train.others(e, r, NEGATIVES), lambda o: o.text, {e.text.lower()}, NEGATIVES)}
        elif task.name == "reverse_dictionary":
            row = {"query": e.text, "pos": [e.query],
                   "neg": _pick(train.others(e, r, NEGATIVES), lambda o: o.query,
                                {n_.lower() for n_ in e.names} | {e.query.lower()}, NEGATIVES)}
        else:
            others = [lb for lb in labels if lb != e.label]
            row = {"query": e.text, "pos": [e.label], "neg": r.sample(others, min(NEGATIVES, len(others)))}
        rows.append({**row, "prompt": task.prompt, "type": task.type})
    return rows


def retrieval_suite(name: str, instruction: str, domain: str, held: list[Entry], docs: Pool,
                    size: int, rng, describe: str) -> Suite:
    """`size` held-out entries as queries -> their texts; the corpus adds hard distractors from
    `docs` (the split's entries, plus training ones for in-domain suites) up to 3 per query."""
    corpus: dict[str, str] = {}
    texts: set[str] = set()
    queries, qrels, chosen = [], [], []
    seen_q: set[str] = set()
    for e in _shuffled(held, rng):
        if len(queries) >= size:
            break
        if e.query.lower() in seen_q or e.text.lower() in texts:
            continue
        seen_q.add(e.query.lower())
        did, qid = f"d{len(corpus)}", f"q{len(queries)}"
        corpus[did] = e.text
        texts.add(e.text.lower())
        queries.append({"_id": qid, "text": e.query})
        qrels.append((qid, did))
        chosen.append(e)
    extra: list[Entry] = []
    for e in chosen:
        near = [o for o in docs.others(e, rng, 2) if not (o.names & e.names)]
        extra.extend(near[:2])
    for o in extra + _shuffled(held, rng):
        if len(corpus) >= 3 * len(queries):
            break
        if o.text.lower() not in texts:
            texts.add(o.text.lower())
            corpus[f"d{len(corpus)}"] = o.text
    rows = [{"_id": k, "title": "", "text": t} for k, t in corpus.items()]
    qrels_tsv = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    return Suite(name, "retrieval", instruction, domain,
                 {"corpus.jsonl": rows, "queries.jsonl": queries, "qrels/test.tsv": qrels_tsv},
                 {"queries": len(queries), "corpus": len(rows)}, describe)


def clustering_suite(name: str, instruction: str, domain: str, held: list[Entry], labels: list[str],
                     size: int, rng, describe: str) -> Suite:
    """Held-out definitions of the given labels, taken label by label in turn."""
    groups = {lb: _shuffled([e for e in held if e.label == lb], rng) for lb in labels}
    rows: list[dict] = []
    depth = 0
    while len(rows) < size and any(depth < len(g) for g in groups.values()):
        for lb in labels:
            if depth < len(groups[lb]) and len(rows) < size:
                rows.append({"text": groups[lb][depth].text, "label": lb})
        depth += 1
    return Suite(name, "clustering", instruction, domain, {"test.jsonl": rows},
                 {"test": len(rows), "labels": len({r["label"] for r in rows})}, describe)


def _shuffled(entries: list[Entry], rng) -> list[Entry]:
    out = sorted(entries, key=lambda e: e.key)
    rng.shuffle(out)
    return out
