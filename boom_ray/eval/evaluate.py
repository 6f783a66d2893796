"""Evaluate one model on many suites: the function `boom eval`, the report and the sweep share.

    results = evaluate_model("runs/x/merges/multislerp", cfg.eval.suites, cfg.eval)
    score(results, "ood_mean/ndcg@10")

Suites are all read and validated before the model is touched, so a broken suite fails in
seconds rather than after the first corpus is embedded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any, Sequence

from boom_ray.config import EvalConfig, ModelConfig, SuiteRef
from boom_ray.eval.embedding import ModelEncoder
from boom_ray.eval.evaluators import evaluate_suite
from boom_ray.eval.prompts import PROMPT_MODES, PromptMode
from boom_ray.eval.results import score, summarize  # noqa: F401  (re-exported for callers)
from boom_ray.eval.suites import Suite, SuiteError, load_suite
from boom_ray.eval.truncation import RecordingEncoder, TruncatedEncoder

log = logging.getLogger(__name__)

SuiteLike = Suite | SuiteRef | str | os.PathLike


def load_suites(suites: Sequence[SuiteLike], *, default_domain: str | None = None,
                default_instruction: str | None = None, split: str | None = None) -> list[Suite]:
    """Suite objects from paths, run-config SuiteRefs (whose domain/instruction override suite.json)
    or already loaded suites."""
    out = []
    for ref in suites:
        if isinstance(ref, Suite):
            out.append(ref)
        elif isinstance(ref, SuiteRef):
            out.append(load_suite(ref.path, domain=ref.domain, instruction=ref.instruction,
                                  default_domain=default_domain, default_instruction=default_instruction,
                                  split=split))
        else:
            out.append(load_suite(ref, default_domain=default_domain, default_instruction=default_instruction,
                                  split=split))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SuiteError(f"suite names must be unique (the folder name is the suite's name): {dupes}")
    return out


def evaluate_model(model_path: str, suites: Sequence[SuiteLike], eval_cfg: EvalConfig | None = None, *,
                   model_cfg: ModelConfig | None = None, default_domain: str | None = None,
                   default_instruction: str | None = None, show_progress: bool = False,
                   embedder=None, prompts: PromptMode | None = None) -> dict[str, Any]:
    """Results document (see `results.summarize`) of `model_path` on `suites`.

    `model_cfg` supplies settings for a plain Hugging Face base model (pooling, prompt template);
    a sentence-transformers folder's own files are used otherwise. `embedder`: a model already
    loaded in this process to score instead (see ModelEncoder). `prompts` is the prompt mode
    (`boom_ray.eval.prompts`): declared (suite / CLI instruction, else the model's own prompt),
    model (the model's own prompt only) or none; by default the run config's `eval.prompts`."""
    if prompts is None:
        prompts = eval_cfg.prompts if eval_cfg is not None else "declared"
    if prompts not in PROMPT_MODES:
        raise ValueError(f"prompts must be one of {PROMPT_MODES}, got {prompts!r}")
    loaded = load_suites(suites, default_domain=default_domain, default_instruction=default_instruction)
    if prompts != "declared":
        loaded = [dataclasses.replace(s, instruction=None) for s in loaded]
    encoder = ModelEncoder(model_path, eval_cfg, model_cfg, show_progress=show_progress, embedder=embedder,
                           use_model_prompts=prompts != "none")
    dims = (eval_cfg.dims if eval_cfg else None) or []
    entries = []
    for i, suite in enumerate(loaded, 1):
        if show_progress:  # a line per suite also reaches logs, where progress bars are off
            print(f"[{i}/{len(loaded)}] {suite.name} ({suite.type}, {suite.domain}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if dims:  # embed once, score at every size (eval/truncation.py)
            recorded = RecordingEncoder(encoder)
            entry = evaluate_suite(suite, recorded)
            entry["dims"] = {str(d): {k: v for k, v in evaluate_suite(suite, TruncatedEncoder(recorded, d)).items()
                                      if k in ("main", "metrics")} for d in dims}
            del recorded
        else:
            entry = evaluate_suite(suite, encoder)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entry["prompts"] = prompts
        log.info("%s on %s: %s = %.4f", model_path, suite.name, entry["main_metric"], entry["main"])
        if show_progress:
            print(f"[{i}/{len(loaded)}] {suite.name}: {entry['main_metric']} = {entry['main']:.4f} "
                  f"({entry['seconds']:.1f} s)", file=sys.stderr, flush=True)
        entries.append(entry)
    return summarize(model_path, entries)
