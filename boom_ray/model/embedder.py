"""A Hugging Face encoder plus pooling: text in, L2-normalised embeddings out.

One class serves training (``tokenize`` + differentiable ``forward``), inference
(``encode``) and export (``save``). The saved directory is a plain Hugging Face model
*and* a sentence-transformers model, so ``SentenceTransformer(path).encode(texts)``
gives the same vectors as :meth:`Embedder.encode` (tested to 1e-5).

Why the tokenizer is patched for last-token pooling: the embedding is the hidden state of
the final token, so that token must be the same for every text (EOS), and it must survive
truncation. Appending EOS in the tokenizer's own post-processor (as Qwen3-Embedding ships
it) makes truncation keep ``max_length - 1`` content tokens plus EOS, and makes
sentence-transformers, which only calls the tokenizer, do exactly what we do.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.fs as pafs
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from boom_ray.config import ModelConfig
from boom_ray.model.eos import adds_eos, patch_eos, tokenize_appending_eos
from boom_ray.model.settings import resolve_local_model_config, resolve_model_path
from boom_ray.model.st_format import (ModelLoadError, patch_tokenizer_config, read_sentence_transformers_settings,
                                      write_sentence_transformers_files)
from boom_ray.runtime.storage import staged_dir

log = logging.getLogger(__name__)

__all__ = ["Embedder", "ModelLoadError", "pool"]


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """transformers' "Loading weights" progress bar off for one load (and back as it was)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _load_kwargs(dtype: torch.dtype | str | None, attn_implementation: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs[key] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


class Embedder(torch.nn.Module):
    """Hugging Face ``AutoModel`` + tokenizer + pooling (``last`` | ``mean`` | ``cls``) + L2 norm.

    ``config`` is the resolved :class:`boom_ray.config.ModelConfig` (pooling, prompt template,
    max lengths). ``model`` is the wrapped transformer, ``tokenizer`` its tokenizer (left
    padding and EOS-appending for last-token pooling).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, config: ModelConfig, do_lower_case: bool = False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.do_lower_case = do_lower_case
        self.matryoshka_dims: list[int] | None = None
        """Sizes the model was trained to be truncated to (train.matryoshka_dims); saved with it."""
        self._manual_eos = False
        self._eos_patch: str | None = None
        # last: every row must end at the same position; cls/mean: position 0 must be real
        tokenizer.padding_side = "left" if config.pooling == "last" else "right"
        if config.pooling == "last" and not adds_eos(tokenizer):
            self._eos_patch = patch_eos(tokenizer)
            if self._eos_patch is None:
                if tokenizer.eos_token_id is None:
                    raise ModelLoadError("last-token pooling needs a tokenizer with an eos_token")
                self._manual_eos = True
                log.warning("tokenizer %s cannot be patched to append EOS; appending it by hand "
                            "(a saved model will not match sentence-transformers)", type(tokenizer).__name__)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
            model.config.use_cache = False  # embeddings never decode; a KV cache only costs memory

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str, config: ModelConfig | None = None, *,
                        dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
                        attn_implementation: str | None = None, **overrides: Any) -> "Embedder":
        """Load `path` (a model dir, hub id, or `builtin:all-MiniLM-L6-v2`).

        Settings come from :func:`resolve_model_config`: ``overrides`` (ModelConfig field names)
        beat the fields set explicitly in ``config``, which beat a sentence-transformers folder's
        own files (pooling, normalisation, query prompt, max_seq_length), then the defaults.
        """
        local = resolve_model_path(path)
        resolved = resolve_local_model_config(path, local, config, overrides)
        st_settings = read_sentence_transformers_settings(local) if os.path.isdir(local) else {}
        do_lower_case = bool(st_settings.get("_do_lower_case", False))
        try:
            tokenizer = AutoTokenizer.from_pretrained(local)
            with _no_loading_bar():  # the callers say which model they load; a bar per load is noise
                model = AutoModel.from_pretrained(local, **_load_kwargs(dtype, attn_implementation))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot load a Hugging Face model/tokenizer: {exc}") from None
        embedder = cls(model, tokenizer, resolved, do_lower_case=do_lower_case)
        embedder.matryoshka_dims = st_settings.get("_matryoshka_dims")
        if device is not None:
            embedder.to(device)
        return embedder

    # ------------------------------------------------------------------ prompts
    def format_query(self, query: str, instruction: str | None = None) -> str:
        """The query text the model sees: ``query_template`` with the instruction filled in."""
        instruction = self.config.default_instruction if instruction is None else instruction
        return self.config.query_template.format(instruction=instruction, query=query)

    @property
    def query_prompt(self) -> str | None:
        """The default query prefix as a sentence-transformers prompt (None when the template
        does not end with ``{query}``, so it cannot be expressed as a prefix)."""
        template = self.config.query_template
        if not template.endswith("{query}") or template.count("{query}") != 1:
            return None
        return template[: -len("{query}")].format(instruction=self.config.default_instruction)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute layer activations in the backward pass (memory for time); non-reentrant so
        that it works with inputs that need no grad and with DeepSpeed ZeRO-3."""
        kwargs = {"use_reentrant": False}
        model = self.model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # ------------------------------------------------------------------ tokenize / forward
    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Padded tensors for `texts`, each cut to `max_length` tokens (EOS included)."""
        texts = [t.lower() for t in texts] if self.do_lower_case else list(texts)
        tok = self.tokenizer
        if self._manual_eos:
            return tokenize_appending_eos(tok, texts, max_length)
        return dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, d] float32 pooled (and, per config, L2-normalised) embeddings; differentiable."""
        inputs = {k: v.to(self.device) for k, v in features.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
        hidden = self.model(**inputs).last_hidden_state
        # fp32 from here on: at temperature 0.02 a bf16 rounding of a cosine (~0.004) would move
        # a logit by ~0.2
        pooled = pool(hidden, inputs["attention_mask"], self.config.pooling).float()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def encode(self, texts: Sequence[str] | str, prompt: str | None = None, batch_size: int = 32,
               max_length: int | None = None, show_progress: bool = False) -> np.ndarray:
        """float32 [n, d] embeddings; `prompt` is prepended verbatim (sentence-transformers
        semantics). Texts are sorted by length so each batch pads little; order is restored."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if prompt:
            items = [prompt + t for t in items]
        max_length = max_length or self.config.max_doc_length
        order = np.argsort([-len(t) for t in items], kind="stable")
        was_training = self.training
        self.eval()
        chunks = []
        try:
            starts = range(0, len(items), batch_size)
            if show_progress:
                starts = tqdm(starts, desc="encode", unit="batch")
            for start in starts:
                batch = [items[i] for i in order[start:start + batch_size]]
                chunks.append(self.forward(self.tokenize(batch, max_length)).float().cpu())
        finally:
            self.train(was_training)
        if not chunks:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        out = torch.cat(chunks).numpy()
        result = np.empty_like(out)
        result[order] = out
        return result[0] if single else result

    def encode_queries(self, queries: Sequence[str], instruction: str | None = None, batch_size: int = 32,
                       max_length: int | None = None, show_progress: bool = False) -> np.ndarray:
        texts = [self.format_query(q, instruction) for q in queries]
        return self.encode(texts, batch_size=batch_size, max_length=max_length or self.config.max_query_length,
                           show_progress=show_progress)

    def encode_documents(self, documents: Sequence[str], batch_size: int = 32, max_length: int | None = None,
                         show_progress: bool = False) -> np.ndarray:
        return self.encode(documents, batch_size=batch_size, max_length=max_length or self.config.max_doc_length,
                           show_progress=show_progress)

    # ------------------------------------------------------------------ export
    def save(self, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None,
             max_shard_size: str | int = "5GB") -> None:
        """Write the DESIGN.md model format to `path` (staged in a sibling temp dir, then renamed).

        `state_dict` replaces the module's own weights (for example the full weights gathered
        from ZeRO-3 shards); keys are those of ``self.model.state_dict()``.
        """
        target = Path(path).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_dir(pafs.LocalFileSystem(), str(target)) as tmp:
            self.model.save_pretrained(tmp, state_dict=state_dict, max_shard_size=max_shard_size)
            self.tokenizer.save_pretrained(tmp)
            # a loader that rebuilds the post-processor from flags must keep the EOS we added
            patch_tokenizer_config(Path(tmp), padding_side=self.tokenizer.padding_side,
                                   add_eos_token=True if self._eos_patch == "flag" else None)
            write_sentence_transformers_files(
                tmp, embedding_dim=self.embedding_dim, pooling=self.config.pooling, normalize=self.config.normalize,
                max_seq_length=self.config.max_doc_length, do_lower_case=self.do_lower_case,
                query_prompt=self.query_prompt, matryoshka_dims=self.matryoshka_dims)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[n, t, d] token states -> [n, d]: last real token, masked mean, or first token."""
    if mode == "last":
        # position of the last 1 in each mask row: works for left and right padding
        t = attention_mask.shape[1]
        last = t - 1 - attention_mask.flip(1).to(torch.int64).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1)
        # where() rather than multiply: pad positions may hold NaN under some attention kernels
        acc = torch.promote_types(hidden.dtype, torch.float32)  # sum bf16 states in fp32
        zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        summed = torch.where(mask.bool(), hidden, zero).sum(1, dtype=acc)
        return summed / mask.to(acc).sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {mode!r}; expected last, mean or cls")
