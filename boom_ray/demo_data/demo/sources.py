"""Turn raw source records into clean glossary entries (pure functions, no IO).

An `Entry` is one thing a source defines: the text a query shows (a term, an acronym, a
package summary), the text that defines it, every name it goes by (for the ID/OOD overlap
checks), an optional label (FOLDOC's subject category, a Debian section) and the names it
cross-references (FOLDOC and Jargon `{links}`), which make hard negatives and distractors.

Cleaning drops dictd markup (`{cross refs}` keep their text, URLs go, `<subject>` tags become the
label, trailing `(1997-05-11)` dates and `[Jargon File]`-style attributions go) and keeps the
first sense, cut at a sentence end under `MAX_CHARS` (a 64-token demo model reads no more;
an entry with no sentence end there is skipped as too long); too short or redirect-only entries
(`See {x}.`) are skipped (None)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from boom_ray.demo_data.demo.dictd import Article

MIN_CHARS, MIN_WORDS, MAX_CHARS = 25, 4, 240  # ~55 tokens: the demo model reads 64


@dataclass(frozen=True)
class Entry:
    source: str
    key: str  # unique within the source
    query: str
    text: str
    names: frozenset[str]  # lower-cased names of the thing defined
    label: str = ""
    related: tuple[str, ...] = ()  # lower-cased names it cross-references
    meta: tuple[tuple[str, str], ...] = ()  # e.g. (("package", "acl"), ("licence", "GPL-2+"))


_URL_LINK = re.compile(r"\{[^{}]*\((?:https?|ftp|mailto|news):[^{}]*\)\s*\}")
URL = re.compile(r"[(<]?(?:(?:https?|ftp|news)://|mailto:)[^\s<>()\[\]]+[)>]?|\s*<[^<>\s]+@[^<>\s]+>")
_LINK = re.compile(r"\{\s*([^{}]*?)\s*\}")
_DATE = re.compile(r"^\(\d{4}-\d{2}-\d{2}\)$")
_TAG = re.compile(r"<([a-z][a-z ,/-]*)>\s*")  # FOLDOC subject tags, usually opening the text
_SENSE = re.compile(r"^\d+\.\s+")
_BRACKETS = re.compile(r"\s*\[[^\[\]]*\]")
_SPACE = re.compile(r"\s+")


def squash(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def links(text: str) -> tuple[str, ...]:
    """Lower-cased targets of `{cross refs}`, in order, once each (URL links excluded)."""
    out: dict[str, None] = {}
    for m in _LINK.finditer(_URL_LINK.sub(" ", text)):
        name = squash(m.group(1)).lower()
        if name:
            out[name] = None
    return tuple(out)


def unmark(text: str) -> str:
    """`{cross ref}` -> `cross ref`; `{name (url)}`, bare URLs and e-mail addresses dropped
    (with an `E-mail:` left empty); spaces squashed, also inside curly quotes."""
    text = _URL_LINK.sub(" ", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = URL.sub(" ", text)
    text = squash(text.replace("{", "").replace("}", ""))
    text = re.sub(r"\b(?:E-mail|Email|Mailing list):\s*(?=[.,;]|$)", "", text)
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)  # what a dropped link or address left
    return squash(text.replace("“ ", "“").replace(" ”", "”"))


def paragraphs(body: str) -> list[str]:
    return [squash(p) for p in re.split(r"\n\s*\n", body) if p.strip()]


def clip(text: str, limit: int = MAX_CHARS) -> str:
    """`text` cut at the last sentence end within `limit` characters; "" (too long: the entry
    is skipped) when its first sentences leave no such end past a third of the limit."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = max(head.rfind(". "), head.rfind("? "), head.rfind("! "))
    return head[:end + 1] if end >= limit // 3 else ""


def usable(text: str) -> bool:
    return (len(text) >= MIN_CHARS and len(text.split()) >= MIN_WORDS
            and not re.match(r"^(see|compare|same as|synonym for)\b", text, re.I))


def first_sense(paras: list[str]) -> list[str]:
    """The paragraphs of sense 1 when an article numbers its senses, else all of them."""
    for i, p in enumerate(paras):
        if p.startswith("1. "):
            rest = []
            for q in paras[i + 1:]:
                if _SENSE.match(q):
                    break
                rest.append(q)
            return [p[3:], *rest]
    return paras


def _definition(paras: list[str]) -> str:
    """The first paragraph, with the next ones while it is shorter than a sentence or two."""
    text = ""
    for p in paras:
        text = f"{text} {p}".strip()
        if len(text) >= 120:
            break
    return clip(text)


def foldoc_entry(article: Article) -> Entry | None:
    """A FOLDOC article: header lines (the term, then its other names), a blank line, then the
    indented body: `<subject, subject>` tags, numbered senses, links, a closing date."""
    header, _, body = article.text.partition("\n\n")
    names = [squash(h) for h in header.splitlines() if h.strip()]
    if not names:
        return None
    paras = [p for p in paragraphs(_URL_LINK.sub(" ", body)) if not _DATE.match(p)]  # links may span lines
    paras = first_sense(paras)
    label = ""
    if paras:
        m = _TAG.search(paras[0])
        if m and m.start() <= 40:  # after at most a pronunciation or an acronym
            label = m.group(1).split(",")[0].strip().lower()
        paras = [_TAG.sub("", p) for p in paras]
    related = links(_BRACKETS.sub("", " ".join(paras)))
    clean = [_BRACKETS.sub("", unmark(p)).strip() for p in paras]
    clean = [p for p in clean if p and not _URL_ONLY.match(p)]
    text = _definition(clean)
    if not usable(text):
        return None
    return Entry("foldoc", names[0].lower(), names[0], text,
                 frozenset(n.lower() for n in names) | set(article.headwords), label, related)


_URL_ONLY = re.compile(r"^[\s.,;:()]*$")


def jargon_entry(article: Article) -> Entry | None:
    """A Jargon File article: the term, a line of pronunciation and part of speech, then the
    indented body, often opening with a bracketed etymology or usage note."""
    lines = article.text.split("\n")
    term = squash(lines[0]) if lines else ""
    body = "\n".join(lines[2:]) if len(lines) > 1 and lines[1].startswith(" ") else "\n".join(lines[1:])
    paras = first_sense(paragraphs(_URL_LINK.sub(" ", body)))
    related = links(_BRACKETS.sub("", " ".join(paras)))
    clean = [_BRACKETS.sub("", unmark(p)).strip() for p in paras]
    text = _definition([p for p in clean if p])
    if not term or not usable(text):
        return None
    return Entry("jargon", term.lower(), term, text, frozenset({term.lower(), *article.headwords}),
                 "", related)


_VERA_NOTES = re.compile(r"\s*(\([^()]*\)|\[[^\[\]]*\]|\"[^\"]*\")\s*")


def vera_entry(article: Article) -> Entry | None:
    """A V.E.R.A. article: the acronym, then its expansion with `(topics)`, `[field]` and
    `"alternative spelling"` notes, which are dropped; only one-expansion entries are kept."""
    lines = [ln for ln in article.text.split("\n") if ln.strip()]
    if len(lines) < 2:
        return None
    acronym = squash(lines[0])
    expansion = squash(" ".join(lines[1:]))
    expansion = squash(_VERA_NOTES.sub(" ", expansion)).rstrip(",;: ")
    if re.search(r"(^|\s)\d+\.\s", expansion) or ";" in expansion:  # several senses
        return None
    if "?" in expansion or len(expansion.split()) < 2 or len(expansion) > 200 or expansion.lower() == acronym.lower():
        return None
    return Entry("vera", acronym.lower(), acronym, expansion,
                 frozenset({acronym.lower(), expansion.lower(), *article.headwords}))


_DEVIL_HEAD = re.compile(r"^([A-Z][A-Z0-9 '\-]*?),\s+((?:(?:[a-z]+\.)\s*(?:and\s+|or\s+|&\s*)?)+)\s*")


def devil_entry(article: Article) -> Entry | None:
    """A Devil's Dictionary article: `WORD, n.  Definition...`, often followed by verse (indented)
    or an anecdote; the definition is the first paragraph's prose, verse lines dropped."""
    text = article.text.strip("\n")
    m = _DEVIL_HEAD.match(text)
    if not m:
        return None
    word = squash(m.group(1)).lower()
    prose = []
    for ln in text[m.end():].split("\n\n")[0].split("\n"):
        if ln.startswith(" ") and prose:  # verse or a quoted anecdote begins
            break
        prose.append(ln)
    definition = clip(_BRACKETS.sub("", unmark(" ".join(prose))).strip())
    definition = re.sub(r"_([^_]+)_", r"\1", definition)  # _emphasis_
    if not usable(definition):
        return None
    return Entry("devil", word, word, definition, frozenset({word, *article.headwords}),
                 m.group(2).strip())
