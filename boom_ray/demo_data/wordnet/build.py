"""Write a WordNet build: `corpus/<task>.jsonl`, `suites/{dev,test}/<suite>/`, LICENSE,
README.md and manifest.json, all into a temporary folder renamed into place on success."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

from boom_ray import __version__
from boom_ray.demo_data.common import Suite, suite_json
from boom_ray.demo_data.output import check_out, readme_head, write_build
from boom_ray.demo_data.wordnet.database import WordNet, WordNetError, check_wordnet_dir, load_wordnet
from boom_ray.demo_data.wordnet.tasks import (
    SPLITS, TASKS, BuildOptions, CorpusBuilder, SuiteBuilder, assign_splits, trained_definitions,
)

BUILDER = "boom build-wordnet"


def licence_text(wordnet_dir: Path) -> str:
    """WordNet's licence as printed in the header of its own data files (numbered lines that
    start with two spaces), so it is the text of exactly the database that was read."""
    lines = []
    with (wordnet_dir / "data.noun").open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("  "):
                break
            lines.append(re.sub(r"^\s+\d+\s?", "", line.rstrip()))
    text = "\n".join(lines).strip()
    if "Princeton" not in text:
        raise WordNetError(f"{wordnet_dir / 'data.noun'}: no licence header found")
    return ("The data in this folder is derived from WordNet 3.0 and distributed under its "
            "licence:\n\n" + text + "\n")


def build(wordnet_dir: Path, out: Path, options: BuildOptions, command: str,
          wn: WordNet | None = None) -> dict:
    """Build everything and return the manifest (also written as manifest.json). `wn` is the
    already parsed database of `wordnet_dir`, if the caller has it."""
    started = time.time()
    check_wordnet_dir(wordnet_dir)
    check_out(out, BUILDER, WordNetError)
    wn = wn or load_wordnet(wordnet_dir)
    splits = assign_splits(wn, options.seed, options.holdout)
    corpus = CorpusBuilder(wn, splits, options)
    tasks = {task.name: corpus.rows(task) for task in TASKS}
    trained = trained_definitions(wn, splits)
    suites = {split: SuiteBuilder(wn, splits, split, options, trained).all() for split in SPLITS}
    manifest = {
        "builder": BUILDER,
        "boom_ray_version": __version__,
        "command": command,
        "options": asdict(options),
        "source": {"wordnet_dir": str(wordnet_dir), "synsets": len(wn)},
        "split_synsets": {s: sum(1 for v in splits.values() if v == s) for s in ("train", *SPLITS)},
        "tasks": {name: len(rows) for name, rows in tasks.items()},
        "suites": {f"{split}/{s.name}": {**suite_json(s), "counts": s.counts}
                   for split in SPLITS for s in suites[split]},
    }
    write_build(out, tasks, suites, {"LICENSE": licence_text(wordnet_dir),
                                     "README.md": readme(manifest, suites)}, manifest)
    manifest["seconds"] = round(time.time() - started, 1)
    return manifest


def readme(manifest: dict, suites: dict[str, list[Suite]]) -> str:
    lines = readme_head(
        "WordNet 3.0 multi-task corpus and evaluation suites",
        "Built by boom-ray from Princeton WordNet 3.0 (Debian `wordnet-base`); see LICENSE.", manifest,
        "noun and adjective synsets held out. Synsets per split: "
        + ", ".join(f"{k} {v}" for k, v in manifest["split_synsets"].items()) + ".")
    lines += [
        "",
        "Nouns and adjectives are split into train / dev / test by a hash of (seed, synset); "
        "verbs and adverbs are never trained on (half dev, half test). Training rows, their "
        "negatives included, use train synsets only. In-domain suites (`domain: in`) hold out "
        "noun and adjective synsets; out-of-domain suites (`domain: out`) use a part of speech, "
        "lexical categories or a query form (usage examples) absent from training.",
        "",
        "## Training corpus (`corpus/`, FlagEmbedding JSONL, 1 positive + up to 7 negatives)",
        "",
        "| task | type | rows | what |",
        "|---|---|---|---|",
    ]
    for task in TASKS:
        lines.append(f"| `{task.name}` | `{task.type}` | {manifest['tasks'][task.name]} | {task.describe} |")
    lines += ["", "## Evaluation suites (`suites/dev/`, `suites/test/`)", "",
              "| suite | type | domain | dev | test | what |", "|---|---|---|---|---|---|"]
    by_name = {split: {s.name: s for s in suites[split]} for split in SPLITS}
    for s in suites["dev"]:
        counts = [", ".join(f"{v} {k}" for k, v in by_name[split][s.name].counts.items())
                  for split in SPLITS]
        lines.append(f"| `{s.name}` | {s.type} | {s.domain} | {counts[0]} | {counts[1]} | {s.describe} |")
    lines += ["", "Each suite folder has `suite.json` (type, instruction, domain). STS scores are "
              "WordNet path similarity, 1 / (1 + shortest taxonomy path).", ""]
    return "\n".join(lines)
