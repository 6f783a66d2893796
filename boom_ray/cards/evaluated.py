"""A model's results on its card once the run has evaluated it: `model-index` entries (one per
suite, its main score) built with huggingface_hub's EvalResult, so the YAML is what the Hub
reads, and the card's Evaluation table. An export or merge card is written before any evaluation;
this rewrites it in place (staged, local or remote). Only cards boom-ray wrote (tag `boom-ray`)
are touched, never a base model's. Kept out of `write` so `boom merge` does not import
huggingface_hub."""

from __future__ import annotations

import logging
import posixpath
from typing import Any

from huggingface_hub import EvalResult, ModelCard

from boom_ray.cards import build as card
from boom_ray.cards.write import README, UNKNOWN, write_text
from boom_ray.runtime import storage

log = logging.getLogger(__name__)

OUR_TAG = "boom-ray"
EVALUATION = "## Evaluation"


def eval_results(results: dict[str, Any]) -> list[EvalResult]:
    """One EvalResult per suite of a results document: its task type, the suite as the dataset
    and its main metric."""
    return [EvalResult(task_type=card.TASK_TYPES.get(s["type"], s["type"]), dataset_type=s["name"],
                       dataset_name=s["name"], dataset_split="test", dataset_config=f"domain-{s['domain']}",
                       metric_type=card.metric_id(s["main_metric"]), metric_name=s["main_metric"],
                       metric_value=round(float(s["main"]), 6))
            for s in results.get("suites") or [] if s.get("main") is not None]


def with_results(text: str, results: dict[str, Any], *, name: str, corpus: str | None = None) -> str:
    """`text` (a card) with `results`' entries replacing any earlier ones of the same suites (others
    are kept: still true of these weights, which a retrain or re-merge would give a new card), the
    Evaluation section rewritten, and `datasets` naming `corpus` where the card names none."""
    mc = ModelCard(text)
    new = eval_results(results)
    suites = {r.dataset_name for r in new}
    mc.data.eval_results = new + [r for r in mc.data.eval_results or [] if r.dataset_name not in suites]
    mc.data.model_name = mc.data.model_name or name
    if corpus and not [d for d in mc.data.datasets or [] if d != UNKNOWN]:
        mc.data.datasets = [corpus]
    head, found, _ = mc.text.partition(EVALUATION + "\n")
    mc.text = (head if found else mc.text.rstrip("\n") + "\n\n") + "\n".join(
        [EVALUATION, "", card.results_section(results), ""])
    return str(mc)


def add_results(model_dir: str, results: dict[str, Any], *, corpus: str | None = None) -> bool:
    """Put `results` on the card in `model_dir` (local or URI); True when the card changed. A card
    that is missing, not ours, or cannot be rewritten is left as it is (with a warning for the
    last): results on a card must never fail an evaluation."""
    try:
        fs, root = storage.resolve(model_dir)
        path = posixpath.join(root, README)
        if not storage.exists(fs, path):
            return False
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
        if OUR_TAG not in (card.front_matter_of(text).get("tags") or []):
            return False
        new = with_results(text, results, name=posixpath.basename(root.rstrip("/")), corpus=corpus)
        if new == text:
            return False
        write_text(fs, path, new)
        return True
    except Exception as exc:  # noqa: BLE001 - a card must not fail an evaluation
        log.warning("%s: results not added to the model card: %s", model_dir, exc)
        return False
