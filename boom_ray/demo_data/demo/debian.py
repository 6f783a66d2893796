"""Debian package descriptions of the installed packages (dpkg's status database): the short
summary is the query, the long description the document it should retrieve.

Installed packages only, so that every item's licence can be read from the package's own
/usr/share/doc/<pkg>/copyright (recorded per item in the manifest). Binary packages of one
source package share their long description almost word for word (libfoo1 / libfoo-dev), so
one package per source is kept, and exact duplicate descriptions go too."""

from __future__ import annotations

import re
from pathlib import Path

from boom_ray.demo_data.demo.dictd import DemoDataError
from boom_ray.demo_data.demo.sources import URL, Entry, clip, squash, usable

STATUS = Path("/var/lib/dpkg/status")
# Reserved for independent checks (never demo data): the Python standard library, manual pages,
# GCIDE; their packages' descriptions are left out too.
RESERVED = re.compile(r"^(python3(\.\d+)?|python3-defaults|python3-stdlib-extensions|manpages(-.+)?|"
                      r"man-db|dict-gcide|gcide)$")
DOC = Path("/usr/share/doc")


def parse_control(text: str, where: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file (dpkg status, apt Packages): field -> value, continuation lines
    kept with their leading space."""
    stanzas, cur, field = [], {}, None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, field = {}, None
        elif line[0] in " \t":
            if field is None:
                raise DemoDataError(f"{where}:{n}: continuation line outside a field: {line[:80]!r}")
            cur[field] += "\n" + line
        elif ":" in line:
            field, _, value = line.partition(":")
            cur[field] = value.strip()
        else:
            raise DemoDataError(f"{where}:{n}: not a 'Field: value' line: {line[:80]!r}")
    if cur:
        stanzas.append(cur)
    return stanzas


def long_description(raw: str) -> str:
    """Debian's extended description: ` .` lines separate paragraphs; bullet lists stay text."""
    paras, cur = [], []
    for line in raw.split("\n"):
        if line.strip() == ".":
            paras.append(" ".join(cur))
            cur = []
        else:
            cur.append(line.strip())
    paras.append(" ".join(cur))
    text = URL.sub(" ", " ".join(p for p in paras if p))  # URLs and e-mail addresses
    return clip(re.sub(r"\s+([.,;:])(?=\s|$)", r"\1", squash(text)))


def package_entries(stanzas: list[dict[str, str]]) -> list[Entry]:
    """One entry per source package among the installed ones (the binary named like its source,
    else the first by name), summary -> long description."""
    by_source: dict[str, dict[str, str]] = {}
    for st in sorted(stanzas, key=lambda s: s.get("Package", "")):
        if "installed" not in st.get("Status", "").split() or "Description" not in st:
            continue
        source = st.get("Source", st["Package"]).split()[0]
        if RESERVED.match(source) or RESERVED.match(st["Package"]):
            continue
        if source not in by_source or st["Package"] == source:
            by_source[source] = st
    out, seen = [], set()
    for source, st in sorted(by_source.items()):
        summary, _, rest = st["Description"].partition("\n")
        summary, text = squash(summary), long_description(rest)
        if not usable(text) or len(summary) < 8 or text.lower() in seen:
            continue
        seen.add(text.lower())
        out.append(Entry("debian", st["Package"], summary, text,
                         frozenset({st["Package"].lower(), source.lower()}), st.get("Section", ""),
                         meta=(("package", st["Package"]), ("version", st.get("Version", "")),
                               ("source", source))))
    return out


def copyright_licence(text: str) -> str:
    """The licence a copyright file states for the package's own files: the `License:` of the
    DEP-5 `Files: *` stanza (else its first `License:`); for a free-form file, the licence names
    it mentions, marked as such."""
    stanza_licence = re.search(r"(?ms)^Files:\s*\*\s*$.*?^License:\s*(\S[^\n]*)", text)
    if stanza_licence:
        return stanza_licence.group(1).strip()
    first = re.search(r"(?m)^License:\s*(\S[^\n]*)", text)
    if first:
        return first.group(1).strip()
    found = [name for name, pat in _NAMES if re.search(pat, text)]
    return ("free-form copyright file mentioning: " + ", ".join(found)) if found else \
        "free-form copyright file (no licence name recognised)"


_NAMES = [("GPL", r"GNU General Public License|\bGPL\b"), ("LGPL", r"Lesser General Public|\bLGPL\b"),
          ("BSD", r"\bBSD\b|Redistribution and use in source and binary forms"),
          ("MIT/X11", r"\bMIT\b|Permission is hereby granted, free of charge"),
          ("Artistic", r"Artistic License"), ("public domain", r"public domain")]


def read_packages(stanzas: list[dict[str, str]], doc: Path = DOC) -> list[Entry]:
    """IO edge: the installed packages' entries (from the parsed dpkg status `stanzas`), each with
    the licence its copyright file states."""
    entries = package_entries(stanzas)
    out = []
    for e in entries:
        path = doc / e.key / "copyright"
        licence = copyright_licence(path.read_text(encoding="utf-8", errors="replace")) \
            if path.is_file() else f"no {path}"
        out.append(Entry(e.source, e.key, e.query, e.text, e.names, e.label, e.related,
                         e.meta + (("licence", licence),)))
    return out
