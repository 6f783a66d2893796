"""Read a dictd database (`NAME.index` + `NAME.dict.dz`, as Debian's dict-* packages install
them under /usr/share/dictd/) into its entries: the headwords that point at one article, and
the article's raw text. Cleaning the text is each source's business (`sources.py`).

An index line is `headword TAB offset TAB length`, the numbers in dictd's base64 alphabet, the
offset and length in bytes of the uncompressed `.dict` (`.dict.dz` is gzip-readable)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

from boom_ray.errors import BoomError

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64 = {c: i for i, c in enumerate(B64)}


class DemoDataError(BoomError):
    """A demo-data source that cannot be read; the message names the file (and line) and, for a
    missing file, the Debian package that installs it."""


@dataclass(frozen=True)
class Article:
    headwords: tuple[str, ...]  # index headwords (lower-cased by dictfmt) that point here
    text: str
    where: str  # "foldoc.index:123" of the first headword


def decode_number(text: str) -> int:
    """dictd's base64 number (most significant digit first)."""
    n = 0
    for c in text:
        n = n * 64 + _B64[c]
    return n


def parse_index_line(line: str, where: str) -> tuple[str, int, int]:
    parts = line.rstrip("\n").split("\t")
    try:
        if len(parts) < 3 or not parts[0]:
            raise KeyError(line)
        return parts[0], decode_number(parts[1]), decode_number(parts[2])
    except KeyError:
        raise DemoDataError(f"{where}: not a dictd index line (headword TAB offset TAB length): "
                            f"{line[:120]!r}") from None


def dictd_files(directory: Path, name: str, package: str) -> tuple[Path, Path]:
    index, data = directory / f"{name}.index", directory / f"{name}.dict.dz"
    for path in (index, data):
        if not path.is_file():
            raise DemoDataError(f"{path} not found: install Debian's {package} "
                                f"(apt-get install {package}) or pass --dictd-dir")
    return index, data


def read_articles(directory: Path, name: str, package: str) -> list[Article]:
    """Every article of the database once, in index order, without dictfmt's `00database*`
    metadata entries."""
    index, data_path = dictd_files(directory, name, package)
    try:
        with gzip.open(data_path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DemoDataError(f"{data_path}: not a readable dictd .dict.dz ({exc}); reinstall {package}") from None
    by_span: dict[tuple[int, int], list[str]] = {}
    first: dict[tuple[int, int], str] = {}
    with index.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{index.name}:{n}"
            head, offset, length = parse_index_line(line, where)
            if head.startswith("00database") or head.startswith("00-database"):
                continue
            if offset + length > len(data):
                raise DemoDataError(f"{index}:{n}: entry {head!r} points past the end of "
                                    f"{data_path.name} ({offset}+{length} > {len(data)} bytes)")
            span = (offset, length)
            by_span.setdefault(span, []).append(head)
            first.setdefault(span, where)
    return [Article(tuple(heads), data[o:o + n].decode("utf-8", errors="replace"), first[(o, n)])
            for (o, n), heads in by_span.items()]
