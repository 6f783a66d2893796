"""The sentence-transformers side of the DESIGN.md model format.

A saved boom-ray model is a Hugging Face directory with four extra small files, so that
``SentenceTransformer(path)`` rebuilds the same pipeline: Transformer -> Pooling -> Normalize.
The pooling config uses the long-standing ``pooling_mode_*`` keys that every
sentence-transformers version reads; the query instruction becomes the ``query`` prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from boom_ray.model.embedder import Embedder

_ST_MODE = {"last": "pooling_mode_lasttoken", "mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_sentence_transformers_files(model_dir: str | Path, embedder: "Embedder") -> None:
    """modules.json, 1_Pooling/config.json, sentence_bert_config.json,
    config_sentence_transformers.json for `embedder` into `model_dir`."""
    import sentence_transformers
    import torch
    import transformers

    model_dir = Path(model_dir)
    cfg = embedder.config
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (model_dir / "2_Normalize").mkdir(exist_ok=True)
    _dump(model_dir / "modules.json", modules)
    pooling = {"word_embedding_dimension": embedder.embedding_dim}
    pooling.update({key: key == _ST_MODE[cfg.pooling] for key in (
        "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")})
    pooling["include_prompt"] = True
    _dump(model_dir / "1_Pooling" / "config.json", pooling)
    _dump(model_dir / "sentence_bert_config.json",
          {"max_seq_length": cfg.max_doc_length, "do_lower_case": embedder.do_lower_case})
    prompts = {}
    if embedder.query_prompt is not None:
        prompts = {"query": embedder.query_prompt, "document": ""}
    _dump(model_dir / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })
