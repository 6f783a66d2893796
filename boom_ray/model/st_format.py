"""The sentence-transformers side of the DESIGN.md model format, read and written here only.

A saved boom-ray model is a Hugging Face directory with a few extra small files, so that
``SentenceTransformer(path)`` rebuilds the same pipeline: Transformer -> Pooling -> Normalize.
Writing uses the long-standing ``pooling_mode_*`` keys that every sentence-transformers version
reads, and the query instruction becomes the ``query`` prompt. Reading turns any
sentence-transformers folder (ours or a public model's) back into ModelConfig settings.

The writer takes plain values, not the Embedder: model/ is a one-way line (embedder -> settings ->
st_format), and settings/eval/plan read these files without loading torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from boom_ray.errors import BoomError

_POOLING_TO_ST = {"last": "lasttoken", "mean": "mean", "cls": "cls"}
_ST_MODE = {"last": "pooling_mode_lasttoken", "mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
_ST_LEGACY_KEYS = {"pooling_mode_lasttoken": "last", "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_cls_token": "cls"}
_ALL_LEGACY_KEYS = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                    "pooling_mode_lasttoken")
MATRYOSHKA_KEY = "matryoshka_dims"
"""config_sentence_transformers.json key listing the sizes a Matryoshka model was trained for
(train.matryoshka_dims). sentence-transformers ignores it; its own `truncate_dim` key would make
every `encode` truncate, so it is left unset: load with ``SentenceTransformer(path,
truncate_dim=d)`` for one of these sizes (first d coordinates; cosine similarity renormalises)."""
_INSTRUCT_PROMPT_RE = re.compile(r"^Instruct: (?P<instruction>.*)\nQuery: $", re.DOTALL)


class ModelLoadError(BoomError):
    """A model directory that cannot be used as an embedder; the message names the file."""


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
        if _read_json(st_config).get(MATRYOSHKA_KEY):
            settings["_matryoshka_dims"] = [int(d) for d in _read_json(st_config)[MATRYOSHKA_KEY]]
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


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_sentence_transformers_files(model_dir: str | Path, *, embedding_dim: int, pooling: str, normalize: bool,
                                      max_seq_length: int, do_lower_case: bool, query_prompt: str | None,
                                      matryoshka_dims: Sequence[int] | None = None) -> None:
    """modules.json, 1_Pooling/config.json, sentence_bert_config.json,
    config_sentence_transformers.json into `model_dir` for a model with these settings
    (`Embedder.save` passes its own: `pooling` is ModelConfig's last / mean / cls, `query_prompt`
    the query prefix or None)."""
    # the saved version numbers only; boom plan and eval read this module's files without these
    import sentence_transformers  # lazy: sentence_transformers; boom plan imports this module
    import torch  # lazy: torch; boom plan imports this module
    import transformers  # lazy: transformers; boom plan imports this module

    model_dir = Path(model_dir)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (model_dir / "2_Normalize").mkdir(exist_ok=True)
    _dump(model_dir / "modules.json", modules)
    pooling_cfg = {"word_embedding_dimension": embedding_dim}
    pooling_cfg.update({key: key == _ST_MODE[pooling] for key in _ALL_LEGACY_KEYS})
    pooling_cfg["include_prompt"] = True
    _dump(model_dir / "1_Pooling" / "config.json", pooling_cfg)
    _dump(model_dir / "sentence_bert_config.json",
          {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case})
    prompts = {}
    if query_prompt is not None:
        prompts = {"query": query_prompt, "document": ""}
    _dump(model_dir / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        **({MATRYOSHKA_KEY: list(matryoshka_dims)} if matryoshka_dims else {}),
    })


def patch_tokenizer_config(model_dir: Path, **values: Any) -> None:
    """Record settings a loader must apply (padding side; EOS for loaders that rebuild the
    post-processor from flags) in tokenizer_config.json; None values are left out."""
    cfg_file = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg.update({k: v for k, v in values.items() if v is not None})
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def set_prompts(model_dir: str | Path, prompts: dict[str, str], default_prompt_name: str | None = None) -> None:
    """Replace the `prompts` / `default_prompt_name` of a saved model's config_sentence_transformers.json
    (an export advertises only the prompts its training used: `boom_ray.train.export.trained_prompts`)."""
    path = Path(model_dir) / "config_sentence_transformers.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["prompts"] = dict(prompts)
    data["default_prompt_name"] = default_prompt_name
    _dump(path, data)


def read_st_prompts(model_dir: str | Path) -> tuple[dict[str, str], str | None]:
    """(prompts, default_prompt_name) of a sentence-transformers folder; ({}, None) without one."""
    path = Path(model_dir) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, None
    prompts = data.get("prompts") if isinstance(data, dict) else None
    prompts = {str(k): v for k, v in (prompts or {}).items() if isinstance(v, str)}
    default = data.get("default_prompt_name") if isinstance(data, dict) else None
    return prompts, default if isinstance(default, str) else None
