"""Which prompts a model *declares*, so evaluation prompts a query only on purpose.

A query gets a prompt from, strongest first: the suite (suite.json ``instruction``, or a run
config SuiteRef), the CLI (``boom eval --instruction``), or the model itself. The model declares
a prompt through its sentence-transformers ``config_sentence_transformers.json`` (``prompts``:
the ``query`` prompt, else the prompt named by ``default_prompt_name``), or, for a plain Hugging
Face base model, through a run config that sets ``model.default_instruction`` or
``model.query_template`` explicitly. A model that declares nothing (sentence-transformers/
all-MiniLM-L6-v2, for one) gets its queries as they are, which is what its users measure with
``SentenceTransformer.encode``. Documents get the model's declared ``document`` (or ``passage`` /
``corpus``) prompt when it has a non-empty one, else none.

Prompt modes of an evaluation (the report scores out-of-domain suites in all three):
- ``declared``: the suite / CLI instruction, else the model's declared prompt, else none;
- ``model``: the model's declared prompt only (suite instructions ignored): what a user who
  follows the model's own config gets;
- ``none``: no prompt at all, queries and documents as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from boom_ray.model.settings import resolve_model_path
from boom_ray.model.st_format import read_st_prompts

PromptMode = Literal["declared", "model", "none"]
PROMPT_MODES: tuple[str, ...] = ("declared", "model", "none")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_TEMPLATE_FIELDS = {"default_instruction", "query_template"}


@dataclass(frozen=True)
class DeclaredPrompts:
    query_prefix: str | None = None
    """The sentence-transformers query prompt, put before a query verbatim (as ST does)."""
    from_config: bool = False
    """The run config sets the prompt template or default instruction for this model."""
    document: str | None = None
    """The declared document prefix, or None."""

    @property
    def query(self) -> bool:
        """Whether the model declares a query prompt at all."""
        return self.query_prefix is not None or self.from_config


def st_query_prompt(prompts: dict[str, str], default_prompt_name: str | None) -> str | None:
    """The prompt sentence-transformers users put before a query: `query`, else the default one."""
    for name in ("query", default_prompt_name):
        if name and prompts.get(name):
            return prompts[name]
    return None


def declared_prompts(model_path: str, model_cfg=None) -> DeclaredPrompts:
    """What `model_path` declares (see the module docstring); `model_cfg` is the run config's model
    section when it describes this model (a plain Hugging Face base)."""
    local = resolve_model_path(model_path)
    prompts, default_name = read_st_prompts(local) if os.path.isdir(local) else ({}, None)
    explicit = bool(model_cfg is not None and _TEMPLATE_FIELDS & set(model_cfg.model_fields_set))
    document = next((prompts[n] for n in DOCUMENT_PROMPT_NAMES if prompts.get(n)), None)
    return DeclaredPrompts(query_prefix=None if explicit else st_query_prompt(prompts, default_name),
                           from_config=explicit, document=document)
