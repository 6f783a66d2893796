"""Turn parsed WordNet into a multi-task training corpus and held-out evaluation suites.

Every synset gets a split before anything is built, from a hash of (seed, synset key) alone,
so the split does not depend on limits, order or which tasks exist:

- nouns and adjectives: `train`, or held out as `dev` / `test` (`holdout` of them, half each);
  the in-domain suites come from the held-out ones;
- verbs and adverbs: never trained on, half `dev`, half `test`; the out-of-domain suites come
  from them (a part of speech, and verb lexical categories, the model never saw).

Training rows use only `train` synsets, negatives included, so a held-out synset's definition
never appears in the corpus. A suite's items come from its own split; the extra documents of a
retrieval suite (distractors) and the partners of STS pairs come from its split or `train`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from tqdm import tqdm

from boom_ray.demo_data.common import Suite, rng_for, sample, unit_hash
from boom_ray.demo_data.wordnet.database import Synset, WordNet, WordNetError
from boom_ray.demo_data.wordnet.graph import children, parents, path_similarity, pick_negatives, walk

ID_POS = ("n", "a")
OOD_POS = ("v", "r")
SPLITS = ("dev", "test")
NEGATIVES = 7

INSTRUCTIONS = {
    "definition": "Given a word or phrase, retrieve its dictionary definition",
    "reverse": "Given a dictionary definition, retrieve the word or phrase it defines",
    "lexname": "Classify a dictionary definition into its WordNet lexical category",
    "synonym": "Given a word or phrase, retrieve a synonym of it",
    "usage": "Given a sentence that uses a word, retrieve the definition of the sense it is used in",
    "sts": "Retrieve dictionary definitions of semantically similar concepts",
    "clustering": "Identify the WordNet lexical category of a dictionary definition",
}


@dataclass(frozen=True)
class BuildOptions:
    seed: int = 0
    max_rows_per_task: int | None = None  # None: one row per eligible training synset
    suite_size: int = 500  # queries / pairs / test items per suite
    holdout: float = 0.1  # fraction of noun and adjective synsets held out (dev + test)

    def __post_init__(self) -> None:
        if self.max_rows_per_task is not None and self.max_rows_per_task < 1:
            raise WordNetError(f"--max-rows-per-task must be at least 1, got {self.max_rows_per_task}")
        if self.suite_size < 10:
            raise WordNetError(f"--suite-size must be at least 10, got {self.suite_size}")
        if not 0.0 < self.holdout < 1.0:
            raise WordNetError(f"--holdout must be between 0 and 1, got {self.holdout}")


def split_of(key: str, seed: int, holdout: float) -> str:
    u = unit_hash(seed, key)
    if key[0] in OOD_POS:
        return "dev" if u < 0.5 else "test"
    if u < holdout / 2:
        return "dev"
    return "test" if u < holdout else "train"


def assign_splits(wn: WordNet, seed: int, holdout: float) -> dict[str, str]:
    return {key: split_of(key, seed, holdout) for key in wn.synsets}


def trained_definitions(wn: WordNet, splits: dict[str, str]) -> set[str]:
    return {wn.synsets[k].definition.lower() for k, s in splits.items() if s == "train"}


def words_text(s: Synset) -> str:
    return ", ".join(s.words)


def balanced_sample(keys: list[str], label: Callable[[str], str], n: int | None,
                    rng: random.Random) -> list[str]:
    """Up to `n` keys taking labels in turn, so small categories are not drowned out."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in sorted(keys):
        groups[label(k)].append(k)
    limit = len(keys) if n is None else min(n, len(keys))
    queues = [sample(groups[name], limit, rng) for name in sorted(groups)]
    out: list[str] = []
    depth = 0
    while len(out) < limit:
        for q in queues:
            if depth < len(q) and len(out) < limit:
                out.append(q[depth])
        depth += 1
    return out


# ---------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: str
    prompt: str
    describe: str


TASKS = (
    TaskSpec("definition_retrieval", "retrieval", INSTRUCTIONS["definition"],
             "the words of a synset (`dog, domestic dog, Canis familiaris`) -> its definition; "
             "negatives: definitions of siblings, antonyms, hypernyms, hyponyms, cousins"),
    TaskSpec("reverse_dictionary", "retrieval", INSTRUCTIONS["reverse"],
             "a definition -> the words of its synset; negatives: words of related synsets"),
    TaskSpec("lexname_classification", "symmetric_class", INSTRUCTIONS["lexname"],
             "a definition -> its lexicographer file (`noun.animal`); negatives: other "
             "categories, same part of speech first"),
    TaskSpec("synonym_paraphrase", "symmetric_sts", INSTRUCTIONS["synonym"],
             "one word of a synset -> another word of it; negatives: words of related synsets"),
)


class CorpusBuilder:
    """Rows of every training task from `train` synsets only."""

    def __init__(self, wn: WordNet, splits: dict[str, str], options: BuildOptions):
        self.wn, self.splits, self.options = wn, splits, options
        self.train = sorted(k for k, s in splits.items() if s == "train")
        self.by_lexname: dict[str, list[str]] = defaultdict(list)
        for k in self.train:
            self.by_lexname[wn.synsets[k].lexname].append(k)
        self.categories = sorted(self.by_lexname)

    def allowed(self, key: str) -> bool:
        return self.splits.get(key) == "train"

    def negatives(self, key: str, text: Callable[[Synset, random.Random], str],
                  rng: random.Random, exclude: Iterable[str]) -> list[str]:
        return pick_negatives(self.wn, key, allowed=self.allowed, text=text, rng=rng,
                              fill_pool=self.by_lexname[self.wn[key].lexname], exclude=exclude,
                              n=NEGATIVES)

    def rows(self, task: TaskSpec) -> list[dict]:
        rng = rng_for(self.options.seed, "task", task.name)
        n = self.options.max_rows_per_task
        if task.name == "lexname_classification":
            keys = balanced_sample(self.train, lambda k: self.wn[k].lexname, n, rng)
        elif task.name == "synonym_paraphrase":
            keys = sample((k for k in self.train if len({w.lower() for w in self.wn[k].words}) > 1), n, rng)
        else:
            keys = sample(self.train, n, rng)
        make = getattr(self, "_" + task.name)
        out = []
        for k in tqdm(keys, desc=task.name, disable=None, leave=False):
            row_rng = rng_for(self.options.seed, task.name, k)
            row = make(self.wn[k], row_rng)
            out.append({**row, "prompt": task.prompt, "type": task.type})
        return out

    def _definition_retrieval(self, s: Synset, rng: random.Random) -> dict:
        query = words_text(s)
        neg = self.negatives(s.key, lambda o, r: o.definition, rng, exclude=[s.definition])
        return {"query": query, "pos": [s.definition], "neg": neg}

    def _reverse_dictionary(self, s: Synset, rng: random.Random) -> dict:
        pos = words_text(s)
        neg = self.negatives(s.key, lambda o, r: words_text(o), rng, exclude=[pos])
        return {"query": s.definition, "pos": [pos], "neg": neg}

    def _lexname_classification(self, s: Synset, rng: random.Random) -> dict:
        part = s.lexname.split(".")[0]
        same = [c for c in self.categories if c != s.lexname and c.startswith(part + ".")]
        other = [c for c in self.categories if not c.startswith(part + ".")]
        rng.shuffle(same)
        rng.shuffle(other)
        return {"query": s.definition, "pos": [s.lexname], "neg": (same + other)[:NEGATIVES]}

    def _synonym_paraphrase(self, s: Synset, rng: random.Random) -> dict:
        distinct = list({w.lower(): w for w in s.words}.values())
        query, pos = rng.sample(distinct, 2)
        neg = self.negatives(s.key, lambda o, r: r.choice(o.words), rng, exclude=s.words)
        return {"query": query, "pos": [pos], "neg": neg}


# ------------------------------------------------------------------------------------ suites


class SuiteBuilder:
    """Evaluation suites of one split (`dev` or `test`)."""

    def __init__(self, wn: WordNet, splits: dict[str, str], split: str, options: BuildOptions,
                 trained: set[str]):
        """`trained`: the lower-cased definitions of all `train` synsets. A held-out synset whose
        definition is word for word a training synset's (131 in WordNet 3.0 for seed 0) is left
        out, so no suite item is a definition the model trained on."""
        self.wn, self.splits, self.split, self.options = wn, splits, split, options
        self.held = sorted(k for k, s in splits.items()
                           if s == split and wn.synsets[k].definition.lower() not in trained)
        self.size = options.suite_size

    def rng(self, name: str) -> random.Random:
        return rng_for(self.options.seed, "suite", self.split, name)

    def pool(self, pos: Iterable[str]) -> list[str]:
        pos = tuple(pos)
        return [k for k in self.held if k[0] in pos]

    def usable(self, key: str) -> bool:
        """A suite may show documents of its own split or of `train`, never of the other split."""
        return self.splits.get(key) in (self.split, "train")

    def all(self) -> list[Suite]:
        return [
            self.retrieval("definition_retrieval", self.pool(ID_POS), "in", usage=False),
            self.classification("lexname_classification", self.pool(ID_POS), "in"),
            self.sts("noun_definition_sts", self.pool("n"), "in"),
            self.clustering("lexname_clustering", self.pool(ID_POS), "in"),
            self.retrieval("verb_adverb_definition_retrieval", self.pool(OOD_POS), "out", usage=False),
            self.retrieval("usage_retrieval", [k for k in self.held if self.wn[k].examples], "out",
                           usage=True),
            self.sts("verb_definition_sts", self.pool("v"), "out"),
            self.clustering("verb_lexname_clustering", self.pool("v"), "out"),
        ]

    def retrieval(self, name: str, pool: list[str], domain: str, *, usage: bool) -> Suite:
        """Queries (a synset's words, or one of its usage examples) -> its definition. The corpus
        also holds hard distractors (definitions of related synsets; for usage queries, other
        senses of the same words) and random definitions of the split, 3 documents per query."""
        rng = self.rng(name)
        docs: dict[str, str] = {}
        doc_texts: set[str] = set()
        queries, qrels = [], []
        seen_queries: set[str] = set()
        for k in sample(pool, None, rng):
            if len(queries) >= self.size:
                break
            s = self.wn[k]
            query = rng.choice(s.examples) if usage else words_text(s)
            if query.lower() in seen_queries or s.definition.lower() in doc_texts:
                continue
            seen_queries.add(query.lower())
            docs[k] = s.definition
            doc_texts.add(s.definition.lower())
            queries.append({"_id": "q" + k, "text": query})
            qrels.append(("q" + k, k))
        distractors = []
        for _, k in qrels:
            s = self.wn[k]
            related = set(parents(self.wn, k)) | set(children(self.wn, k))
            related |= {c for p in parents(self.wn, k) for c in children(self.wn, p)}
            if usage:
                related |= {o for w in s.words for o in self.wn.senses.get(w.lower(), [])}
            else:
                related = {o for o in related if not ({w.lower() for w in self.wn[o].words}
                                                      & {w.lower() for w in s.words})}
            picks = [o for o in sorted(related - {k}) if self.usable(o)]
            rng.shuffle(picks)
            distractors.extend(picks[:2])
        filler = sample(pool, None, rng)
        for o in distractors + filler:
            if len(docs) >= 3 * len(queries):
                break
            text = self.wn[o].definition
            if o not in docs and text.lower() not in doc_texts:
                docs[o] = text
                doc_texts.add(text.lower())
        corpus = [{"_id": k, "title": "", "text": t} for k, t in docs.items()]
        qrels_tsv = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
        what = "a usage example" if usage else "the words of a synset"
        return Suite(name, "retrieval", INSTRUCTIONS["usage" if usage else "definition"], domain,
                     {"corpus.jsonl": corpus, "queries.jsonl": queries, "qrels/test.tsv": qrels_tsv},
                     {"queries": len(queries), "corpus": len(corpus)},
                     f"{what} -> its definition; {_pos_names(pool)}")

    def classification(self, name: str, pool: list[str], domain: str) -> Suite:
        """Definition -> lexicographer file; train and test are disjoint synsets of the split,
        each label split alternately between them."""
        keys = balanced_sample(pool, lambda k: self.wn[k].lexname, 2 * self.size, self.rng(name))
        seen: dict[str, int] = defaultdict(int)
        train, test = [], []
        for k in keys:
            s = self.wn[k]
            (train if seen[s.lexname] % 2 == 0 else test).append({"text": s.definition, "label": s.lexname})
            seen[s.lexname] += 1
        return Suite(name, "classification", INSTRUCTIONS["lexname"], domain,
                     {"train.jsonl": train, "test.jsonl": test},
                     {"train": len(train), "test": len(test), "labels": len(seen)},
                     f"definition -> lexicographer file; {_pos_names(pool)}")

    def clustering(self, name: str, pool: list[str], domain: str) -> Suite:
        keys = balanced_sample(pool, lambda k: self.wn[k].lexname, self.size, self.rng(name))
        rows = [{"text": self.wn[k].definition, "label": self.wn[k].lexname} for k in keys]
        return Suite(name, "clustering", INSTRUCTIONS["clustering"], domain, {"test.jsonl": rows},
                     {"test": len(rows), "labels": len({r["label"] for r in rows})},
                     f"definitions clustered by lexicographer file; {_pos_names(pool)}")

    def sts(self, name: str, pool: list[str], domain: str) -> Suite:
        """Pairs of definitions scored by WordNet path similarity. Partners are found by walks of
        1 to 6 steps in the taxonomy, or at random, in turn, so scores spread over the range."""
        rng = self.rng(name)
        pos = pool[0][0] if pool else ""
        same_pos = [k for k, s in self.splits.items() if k[0] == pos and s in (self.split, "train")]
        walks = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), None, None]
        rows, seen = [], set()
        for i, k in enumerate(sample(pool, None, rng)):
            if len(rows) >= self.size:
                break
            step = walks[i % len(walks)]
            other = rng.choice(same_pos) if step is None else walk(self.wn, k, *step, rng)
            if other is None or other == k or not self.usable(other):
                continue
            a, b = self.wn[k].definition, self.wn[other].definition
            pair = frozenset((k, other))
            if a.lower() == b.lower() or pair in seen:
                continue
            seen.add(pair)
            rows.append({"sentence1": a, "sentence2": b,
                         "score": round(path_similarity(self.wn, k, other), 4)})
        return Suite(name, "sts", INSTRUCTIONS["sts"], domain, {"test.jsonl": rows},
                     {"pairs": len(rows)},
                     f"definition pairs scored by path similarity; {_pos_names(pool)}")


def _pos_names(pool: list[str]) -> str:
    names = {"n": "nouns", "v": "verbs", "a": "adjectives", "r": "adverbs"}
    return "+".join(names[p] for p in "nvar" if any(k[0] == p for k in pool))
