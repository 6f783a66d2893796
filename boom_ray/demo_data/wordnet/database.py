"""Read the WordNet 3.0 database (Debian `wordnet-base`).

The data files (`data.noun`, `data.verb`, `data.adj`, `data.adv`) hold one synset per line,
in the "wndb" format:

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt
        [pointer_symbol synset_offset pos source/target...] [frames...] | gloss

`w_cnt` and `lex_id` are hexadecimal, `p_cnt` decimal; the offset is the line's byte offset in
its file (which is how we tell a real, unmodified database from something else). Lines that
start with two spaces are the licence header. A gloss is a definition followed by quoted
usage examples: `definition; "example one"; "example two"`.

This module only parses; `tasks` turns the parsed synsets into a training corpus and
evaluation suites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from boom_ray.errors import BoomError

DATA_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)); Debian does not ship `lexnames`,
# so this is the fallback when the file is absent.
LEXNAMES_30 = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()

# Pointer symbols used to build related-synset sets (wninput(5WN)).
HYPERNYM = ("@", "@i")
HYPONYM = ("~", "~i")
SIMILAR = "&"
ANTONYM = "!"
ALSO_SEE = "^"

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_EXAMPLE = re.compile(r'"([^"]+)"')


class WordNetError(BoomError):
    """The WordNet directory is missing, incomplete or not WordNet 3.0."""


@dataclass(frozen=True)
class Synset:
    """One synset. `key` is the file's part of speech plus the offset (`n00001740`), unique
    across the database; satellites (`ss_type` "s") live in the adjective file, so their key
    starts with "a"."""

    key: str
    ss_type: str
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    pointers: tuple[tuple[str, str], ...]  # (pointer symbol, target key)

    @property
    def pos(self) -> str:
        return self.key[0]

    def related(self, *symbols: str) -> list[str]:
        return [target for symbol, target in self.pointers if symbol in symbols]


@dataclass
class WordNet:
    """All synsets by key, plus the index from a lower-cased word to the synsets it names."""

    synsets: dict[str, Synset]
    senses: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.synsets)

    def __getitem__(self, key: str) -> Synset:
        return self.synsets[key]


def display_word(raw: str) -> str:
    """`galore(ip)` -> `galore`, `domestic_dog` -> `domestic dog`."""
    return _ADJ_MARKER.sub("", raw).replace("_", " ")


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """(definition, usage examples) of a gloss; the examples are its quoted strings."""
    gloss = gloss.strip()
    head, sep, tail = gloss.partition('; "')
    if not sep:
        if gloss.startswith('"'):  # a gloss made only of examples
            head, tail = "", gloss
        else:
            return gloss.rstrip("; ").strip(), ()
    else:
        tail = '"' + tail
    examples = tuple(e.strip() for e in _EXAMPLE.findall(tail) if e.strip())
    return head.rstrip("; ").strip(), examples


def parse_data_line(line: str, file_pos: str, lexnames: list[str], where: str = "") -> Synset:
    """Parse one synset line of a data file (`file_pos` is the file's n/v/a/r)."""
    try:
        fields, sep, gloss = line.partition(" | ")
        if not sep:
            raise ValueError("no ' | ' before the gloss")
        tok = fields.split()
        offset, lex_filenum, ss_type = tok[0], int(tok[1]), tok[2]
        if len(offset) != 8 or not offset.isdigit():
            raise ValueError(f"bad synset offset {offset!r}")
        if ss_type not in ("n", "v", "a", "s", "r"):
            raise ValueError(f"bad synset type {ss_type!r}")
        w_cnt = int(tok[3], 16)
        words = tuple(display_word(tok[4 + 2 * i]) for i in range(w_cnt))
        i = 4 + 2 * w_cnt
        p_cnt = int(tok[i])
        pointers = []
        for j in range(p_cnt):
            symbol, target, pos = tok[i + 1 + 4 * j: i + 4 + 4 * j]
            pointers.append((symbol, ("a" if pos == "s" else pos) + target))
        if len(tok) < i + 1 + 4 * p_cnt:
            raise ValueError(f"{p_cnt} pointers announced, fewer present")
        definition, examples = split_gloss(gloss)
        return Synset(key=file_pos + offset, ss_type=ss_type, lexname=lexnames[lex_filenum],
                      words=words, definition=definition, examples=examples,
                      pointers=tuple(pointers))
    except (ValueError, IndexError) as exc:
        raise WordNetError(f"{where}: not a WordNet data line ({exc}): {line[:120]!r}") from None


def read_lexnames(wordnet_dir: Path) -> list[str]:
    """Lexicographer file names by number: the `lexnames` file if present, else WordNet 3.0's."""
    path = wordnet_dir / "lexnames"
    if not path.exists():
        return list(LEXNAMES_30)
    names = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or int(parts[0]) != len(names):
            raise WordNetError(f"{path}:{n}: expected 'NN name pos', got {line!r}")
        names.append(parts[1])
    return names


def iter_data_file(path: Path, file_pos: str, lexnames: list[str]) -> Iterator[Synset]:
    """Synsets of one data file, checking that each offset is the line's byte offset."""
    position = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            start, position = position, position + len(raw)
            if raw.startswith(b"  "):
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            synset = parse_data_line(line, file_pos, lexnames, where=f"{path}:{n}")
            if int(synset.key[1:]) != start:
                raise WordNetError(
                    f"{path}:{n}: synset offset {synset.key[1:]} is not the line's byte offset "
                    f"{start}; the file is not an unmodified WordNet database")
            yield synset


def check_wordnet_dir(wordnet_dir: Path) -> None:
    """Fail clearly when `wordnet_dir` is not a WordNet 3.0 database."""
    if not wordnet_dir.is_dir():
        raise WordNetError(
            f"WordNet directory {wordnet_dir} not found; install Debian's wordnet-base "
            f"(/usr/share/wordnet) or pass --wordnet-dir")
    missing = [name for name in DATA_FILES.values() if not (wordnet_dir / name).is_file()]
    if missing:
        raise WordNetError(f"{wordnet_dir} is not a WordNet database: missing {', '.join(missing)}")
    with (wordnet_dir / "data.noun").open("rb") as f:
        header = f.read(4096).decode("utf-8", errors="replace")
    if "WordNet 3.0" not in header:
        raise WordNetError(f"{wordnet_dir / 'data.noun'}: licence header does not name WordNet 3.0; "
                           f"build-wordnet needs WordNet 3.0")


def load_wordnet(wordnet_dir: str | Path, parts_of_speech: Iterable[str] = "nvar") -> WordNet:
    """Parse the whole database (about 117k synsets, a few seconds)."""
    wordnet_dir = Path(wordnet_dir)
    check_wordnet_dir(wordnet_dir)
    lexnames = read_lexnames(wordnet_dir)
    synsets: dict[str, Synset] = {}
    senses: dict[str, list[str]] = {}
    for pos in parts_of_speech:
        for synset in iter_data_file(wordnet_dir / DATA_FILES[pos], pos, lexnames):
            synsets[synset.key] = synset
            for word in synset.words:
                senses.setdefault(word.lower(), []).append(synset.key)
    if synsets.get("n00001740") is None or synsets["n00001740"].words != ("entity",):
        raise WordNetError(f"{wordnet_dir}: synset 00001740 is not 'entity'; not WordNet 3.0")
    return WordNet(synsets=synsets, senses=senses)
