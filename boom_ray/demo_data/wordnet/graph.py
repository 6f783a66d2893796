"""Relations between WordNet synsets that the corpus builder needs: parents and children in the
taxonomy, siblings, hard-negative candidates, and path similarity for graded STS pairs.

Adjectives have no hypernyms; their taxonomy is the "similar to" cluster: a head adjective
(`ss_type` "a") is the parent of its satellites ("s"). Treating that as parent/child makes
siblings and hard negatives work the same way for nouns, verbs and adjectives.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Iterable, Iterator

from boom_ray.demo_data.wordnet.database import ALSO_SEE, ANTONYM, HYPERNYM, HYPONYM, SIMILAR, Synset, WordNet


def _related(wn: WordNet, key: str, pointers: tuple[str, ...], similar_for: str) -> list[str]:
    """Synsets linked by `pointers`, plus the "similar to" links of adjectives of type `similar_for`."""
    s = wn[key]
    out = s.related(*pointers)
    return out + s.related(SIMILAR) if s.ss_type == similar_for else out


def parents(wn: WordNet, key: str) -> list[str]:
    """Hypernyms; a satellite adjective's parent is its head adjective."""
    return _related(wn, key, HYPERNYM, "s")


def children(wn: WordNet, key: str) -> list[str]:
    """Hyponyms; a head adjective's children are its satellites."""
    return _related(wn, key, HYPONYM, "a")


def siblings(wn: WordNet, key: str) -> list[str]:
    return sorted({c for p in parents(wn, key) for c in children(wn, p)} - {key})


def word_set(s: Synset) -> set[str]:
    return {w.lower() for w in s.words}


def candidate_tiers(wn: WordNet, key: str) -> Iterator[list[str]]:
    """Related synsets from hardest to easiest negative: siblings and lateral relations, then
    parents and children, then cousins (children of the parents' siblings), then the
    grandparents' other descendants one level down. Computed lazily: most rows stop early."""
    s = wn[key]
    yield sorted(set(siblings(wn, key)) | set(s.related(ANTONYM, ALSO_SEE, SIMILAR)))
    yield sorted(set(parents(wn, key)) | set(children(wn, key)))
    ups = parents(wn, key)
    yield sorted({c for p in ups for u in siblings(wn, p) for c in children(wn, u)})
    yield sorted({u for p in ups for u in siblings(wn, p)})


def pick_negatives(
    wn: WordNet,
    key: str,
    *,
    allowed: Callable[[str], bool],
    text: Callable[[Synset, random.Random], str],
    rng: random.Random,
    fill_pool: list[str],
    exclude: Iterable[str] = (),
    n: int = 7,
    extra_tiers: Iterable[list[str]] = (),
    avoid_shared_words: bool = True,
) -> list[str]:
    """Up to `n` distinct negative texts from synsets related to `key`, hardest first, topped up
    from `fill_pool` (same lexicographer file), never one of the `exclude` texts (the query and
    its positive). A synset that shares a word with `key` is
    skipped when `avoid_shared_words` is set: for a word query, another sense of the same word
    would be a correct answer, not a negative."""
    anchor = wn[key]
    own_words = word_set(anchor)
    taken = {t.lower() for t in exclude}
    out: list[str] = []

    def consider(candidates: list[str]) -> None:
        for c in candidates:
            if len(out) >= n:
                return
            if c == key or not allowed(c):
                continue
            s = wn[c]
            if avoid_shared_words and word_set(s) & own_words:
                continue
            t = text(s, rng)
            if t and t.lower() not in taken:
                taken.add(t.lower())
                out.append(t)

    for tier in itertools.chain(extra_tiers, candidate_tiers(wn, key)):
        tier = list(tier)
        rng.shuffle(tier)
        consider(tier)
        if len(out) >= n:
            return out
    if fill_pool:
        consider([fill_pool[rng.randrange(len(fill_pool))] for _ in range(8 * n)])
    return out


def _ancestors(wn: WordNet, key: str) -> dict[str, int]:
    """Every hypernym ancestor (and the synset itself) with its shortest distance."""
    depth = {key: 0}
    frontier = [key]
    while frontier:
        nxt = []
        for k in frontier:
            for p in wn[k].related(*HYPERNYM):
                if p not in depth:
                    depth[p] = depth[k] + 1
                    nxt.append(p)
        frontier = nxt
    return depth


def path_similarity(wn: WordNet, a: str, b: str) -> float:
    """1 / (1 + shortest path through a common hypernym), as WordNet::Similarity's `path`.
    Verbs have several roots; without a common ancestor the path runs through a simulated root
    above them all (as NLTK's `simulate_root`)."""
    da, db = _ancestors(wn, a), _ancestors(wn, b)
    common = da.keys() & db.keys()
    if common:
        dist = min(da[c] + db[c] for c in common)
    else:
        root_a = min(d for k, d in da.items() if not wn[k].related(*HYPERNYM))
        root_b = min(d for k, d in db.items() if not wn[k].related(*HYPERNYM))
        dist = root_a + root_b + 2
    return 1.0 / (1 + dist)


def walk(wn: WordNet, key: str, ups: int, downs: int, rng: random.Random) -> str | None:
    """A random walk `ups` steps up the hypernym taxonomy then `downs` steps down."""
    k = key
    for _ in range(ups):
        options = wn[k].related(*HYPERNYM)
        if not options:
            break
        k = rng.choice(sorted(options))
    for _ in range(downs):
        options = sorted(set(wn[k].related(*HYPONYM)) - {key})
        if not options:
            break
        k = rng.choice(options)
    return None if k == key else k
