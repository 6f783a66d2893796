"""README.md and LICENSE of a demo-data build: what each source is, its Debian package version
and licence, the split and why, and the tables of tasks and suites."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from boom_ray.demo_data.common import Suite
from boom_ray.demo_data.output import readme_head
from boom_ray.demo_data.wordnet.tasks import SPLITS

LICENCES = {
    "wordnet": "WordNet 3.0 licence (permissive, Princeton University)",
    "foldoc": "GNU FDL 1.1 or later, no invariant sections (Copyright 1993 Denis Howe)",
    "jargon": "public domain",
    "vera": "GNU FDL 1.1 or later, no invariant sections (GFDL-NIV-1.1+)",
    "devil": "public domain (copyright expired)",
    "debian": "each package's own licence, as its /usr/share/doc/<pkg>/copyright states "
              "(manifest.json: sources.debian.packages)",
}
GFDL = Path("/usr/share/common-licenses/GFDL-1.3")  # Debian base-files; FOLDOC and V.E.R.A. are GFDL 1.1+
COPYRIGHT_FILES = {"foldoc": "dict-foldoc", "jargon": "dict-jargon", "vera": "dict-vera", "devil": "dict-devil"}


def licence(paths, wordnet_text: str) -> str:
    """One section per source: WordNet's licence header, each dict package's copyright file
    verbatim, and the Debian descriptions' per-package licences."""
    parts = ["Licences of the data in this folder, by source. Corpus files under corpus/<source>/ "
             "and suites named <source>_* derive from that source only.\n",
             "== wordnet (corpus/wordnet, suites wordnet_*) ==\n\n" + wordnet_text]
    for name, package in COPYRIGHT_FILES.items():
        path = Path(paths.doc_dir) / package / "copyright"
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else f"({path} not found)\n"
        parts.append(f"== {name} (Debian {package}; {LICENCES[name]}) ==\n\n{path}:\n\n{text}")
    parts.append("== debian (suites debian_*) ==\n\nDebian package descriptions (summary and long "
                 "description of installed packages), each under its package's licence as stated in "
                 "/usr/share/doc/<pkg>/copyright; manifest.json lists every package used with its "
                 "version and that licence.\n")
    gfdl = GFDL.read_text(encoding="utf-8") if GFDL.is_file() else f"({GFDL} not found on the building machine)\n"
    parts.append(f"== GNU Free Documentation License 1.3 (for foldoc and vera), {GFDL} ==\n\n{gfdl}")
    return "\n".join(parts)


def readme(manifest: dict, suites: dict[str, list[Suite]]) -> str:
    src = manifest["sources"]
    pkgs = src["debian"].get("packages", [])
    top = Counter(p.get("licence", "") for p in pkgs).most_common(6)
    lines = readme_head(
        "Demo data: multi-task training corpus and in-/out-of-domain suites from several sources",
        "Built by boom-ray from text that Debian installs offline; see LICENSE and manifest.json.", manifest,
        "WordNet noun/adjective synsets and of FOLDOC entries held out (half dev, half test).")
    lines += [
        "",
        "## Sources",
        "",
        "| source | Debian package | version | role | licence |",
        "|---|---|---|---|---|",
    ]
    for name, s in src.items():
        lines.append(f"| {s['what']} | `{s['package']}` | {s['version']} | {s['role']} | {LICENCES[name]} |")
    lines += [
        "",
        "Why this split: training (in-domain) is WordNet (general English lexicon) plus FOLDOC "
        "(computing terms), so the corpus is multi-task across two sources. The out-of-domain suites "
        "come only from sources no training row was drawn from: hacker slang (Jargon File), acronym "
        "expansions (V.E.R.A.), satirical 19th-century definitions (The Devil's Dictionary) and "
        "software package descriptions (Debian), so fine-tuning on the corpus need not lift them.",
        "",
        "Disjointness: WordNet synsets and FOLDOC entries are split by a hash of (seed, key); held-out "
        "FOLDOC entries sharing a name or text with a training entry, or a name with a WordNet training "
        "term, are dropped. FOLDOC absorbed much of "
        "the Jargon File and many acronyms, so an out-of-domain item is dropped when any name it goes by "
        "is a FOLDOC name (any FOLDOC entry, trained or not) or a term of a WordNet training row, or when "
        "its query or text is a training text: "
        + ", ".join(f"{n} {src[n]['dropped_overlap']} of {src[n]['entries']}"
                    for n in src if "dropped_overlap" in src[n]) + " dropped. "
        "Out-of-domain suites draw distractors from their own split only.",
        "",
        "Cleaning: dictd markup stripped (`{cross refs}` keep their text, URLs and e-mail addresses go, "
        "`<subject>` tags become FOLDOC's label, closing dates and bracketed attributions go), first "
        "sense only, cut at a sentence end under 240 characters (about 55 tokens; the demo's MiniLM reads 64); entries with no sentence end there, "
        "under 25 characters or 4 words, redirects (`See ...`) and acronyms with several or unknown (`???`) expansions are skipped. Debian: one "
        "package per source package (binaries of one source share their description), installed "
        "packages only (so each licence is read from the package's copyright file); descriptions of "
        "Python, manual-page and GCIDE packages are left out (reserved for independent checks). "
        "The Debian suite depends on the packages installed where it is built.",
        "",
        f"Debian descriptions: {len(pkgs)} packages usable; most frequent licences: "
        + ", ".join(f"{lic} ({n})" for lic, n in top) + ".",
        "",
        "## Training corpus (`corpus/<source>/<task>.jsonl`, FlagEmbedding JSONL, 1 positive + up to 7 negatives)",
        "",
        "| task | rows |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {n} |" for name, n in manifest["tasks"].items()]
    lines += ["", "## Evaluation suites (`suites/dev/`, `suites/test/`)", "",
              "| suite | type | domain | dev | test | what |", "|---|---|---|---|---|---|"]
    by_name = {split: {s.name: s for s in suites[split]} for split in SPLITS}
    for s in suites["dev"]:
        counts = [", ".join(f"{v} {k}" for k, v in by_name[split][s.name].counts.items()) for split in SPLITS]
        lines.append(f"| `{s.name}` | {s.type} | {s.domain} | {counts[0]} | {counts[1]} | {s.describe} |")
    lines += ["", "Each suite folder has `suite.json` (type, instruction, domain).", ""]
    return "\n".join(lines)
