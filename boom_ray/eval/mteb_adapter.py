"""A boom-ray model as an `mteb` encoder (mteb 2's ``EncoderProtocol``), for official benchmarks.

    import mteb
    from boom_ray.eval.mteb_adapter import MtebEncoder

    model = MtebEncoder("runs/x/merges/multislerp")
    mteb.evaluate(model, mteb.get_tasks(tasks=["NFCorpus", "STS12"]))

Prompts follow the convention boom-ray's own evaluators use: documents are embedded as they are;
queries get ``format_query(text, instruction)`` with the task's instruction (mteb's task prompt,
or ``instructions[task name]`` / ``instructions[task type]`` given here), falling back to the
prompt the model itself declares (`boom_ray.eval.prompts`). A model that declares no prompt and
is given no `instructions` is treated as mteb treats a plain sentence-transformers model: no task
prompts, texts as they are. Symmetric tasks (no prompt type) get the instruction when there is one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as exc:  # pragma: no cover - mteb is a declared dependency
    raise ImportError("the mteb adapter needs `pip install mteb>=2`") from exc

from boom_ray.config import ModelConfig
from boom_ray.eval.prompts import declared_prompts
from boom_ray.model.embedder import Embedder  # torch: this module is for benchmark runs, heavy anyway (mteb)


class MtebEncoder(AbsEncoder):
    """Embedder behind mteb's encode protocol; similarity is cosine (the vectors are unit length)."""

    def __init__(self, model_name: str, revision: str | None = None, *, device: str | None = None,
                 batch_size: int = 32, instructions: dict[str, str] | None = None,
                 model_cfg: ModelConfig | None = None, **kwargs: Any):
        self.model = Embedder.from_pretrained(model_name, model_cfg, device=device)
        self.declared = declared_prompts(model_name, model_cfg)
        self.batch_size = batch_size
        self.prompts_dict = dict(instructions or {})
        self.uses_instructions = bool(self.prompts_dict) or self.declared.query
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": f"boom-ray/{model_name.rstrip('/').split('/')[-1]}", "revision": revision or "local",
            "similarity_fn_name": ScoringFunction.COSINE, "embed_dim": self.model.embedding_dim, "framework": ["PyTorch"],
            "use_instructions": self.uses_instructions,
        })

    def texts_for(self, texts: list[str], task_metadata, prompt_type: PromptType | None) -> list[str]:
        """The exact strings the model sees for this task and prompt type."""
        if prompt_type == PromptType.document:
            return [self.declared.document + t for t in texts] if self.declared.document else texts
        instruction = (self.get_instruction(task_metadata, prompt_type) or None) if self.uses_instructions else None
        if instruction:
            return [self.model.format_query(t, instruction) for t in texts]
        if prompt_type == PromptType.query and self.declared.query_prefix is not None:
            return [self.declared.query_prefix + t for t in texts]
        if prompt_type == PromptType.query and self.declared.from_config:
            return [self.model.format_query(t, None) for t in texts]
        return texts

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        return self.model.encode(self.texts_for(texts, task_metadata, prompt_type),
                                 batch_size=kwargs.get("batch_size", self.batch_size),
                                 show_progress=bool(kwargs.get("show_progress_bar", False)))
