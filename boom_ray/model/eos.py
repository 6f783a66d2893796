"""Last-token pooling needs every text to end with EOS, also after truncation: make the
tokenizer append it itself (so sentence-transformers, which only calls the tokenizer, does the
same), or append it by hand where the tokenizer cannot be patched."""

from __future__ import annotations

from typing import Sequence

import torch
from tokenizers import processors


def adds_eos(tokenizer) -> bool:
    """Whether the tokenizer itself ends every text with EOS (or, for BERT-like ones, SEP)."""
    ends = {tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)} - {None}
    last = tokenizer("a")["input_ids"][-1:]
    return bool(last) and last[0] in ends


def patch_eos(tokenizer) -> str | None:
    """Make a fast tokenizer append EOS itself. Returns how ("flag": transformers' own
    ``add_eos_token``; "template": a post-processor template), or None when it cannot."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.eos_token is None:
        return None
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    before = tokenizer("a")["input_ids"]
    template = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
                                             special_tokens=[(eos, eos_id)])
    current = backend.post_processor
    if isinstance(getattr(type(tokenizer), "add_eos_token", None), property):
        # transformers >= 5 rebuilds its template (BOS included) from this flag, also on reload
        try:
            tokenizer.add_eos_token = True
            if tokenizer("a")["input_ids"] == before + [eos_id]:
                return "flag"
        except (AttributeError, TypeError, ValueError):
            pass
        object.__setattr__(tokenizer, "_add_eos_token", False)
    # otherwise keep what the current post-processor does (byte-level offsets) and add EOS after it
    candidates = [template] if current is None else [processors.Sequence([current, template]), template]
    for candidate in candidates:
        backend.post_processor = candidate
        if tokenizer("a")["input_ids"] == before + [eos_id]:
            return "template"
    backend.post_processor = current
    return None


def tokenize_appending_eos(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """For tokenizers that cannot be patched: cut to ``max_length - 1`` tokens, append EOS, pad."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length - 1)["input_ids"]
    rows = [{"input_ids": row + [tokenizer.eos_token_id], "attention_mask": [1] * (len(row) + 1)} for row in ids]
    return dict(tokenizer.pad(rows, padding=True, return_tensors="pt"))
