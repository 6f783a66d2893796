"""One validated model of a boom-ray run, loaded from YAML.

Every stage reads its own section of :class:`BoomConfig`; nothing else carries
settings around. Unknown keys are errors, and every error names its path in the
YAML file (``bagging.ratios[2]``) and what was expected, because a typo in a
config that silently falls back to a default costs a day of GPU time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from boom_ray.errors import BoomError, describe_validation_errors
from boom_ray.config.units import parse_size  # noqa: F401  (re-exported)
from pydantic import Field, ValidationError, model_validator

from boom_ray.config.constants import BUNDLED_MINILM, STAGES  # noqa: F401  (re-exported)
from boom_ray.config.sections import (  # noqa: F401  (re-exported: every stage imports its section from here)
    Strict,
    CorpusConfig,
    BaggingConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
    MergeSpec,
    MergeConfig,
    SuiteRef,
    EvalConfig,
    SweepConfig,
    UpdateConfig,
    RayConfig,
)


class ConfigError(BoomError):
    """A run configuration that cannot be used; the message names the file and key."""


class BoomConfig(Strict):
    """One boom-ray run, as its YAML file says it: every stage reads its own section. Named so that
    it never shadows Ray's own `ray.train.RunConfig` where both are used (train/launch.py)."""

    workdir: str
    corpus: CorpusConfig
    bagging: BaggingConfig = Field(default_factory=BaggingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    update: UpdateConfig | None = None
    ray: RayConfig = Field(default_factory=RayConfig)
    repeats: int = Field(1, ge=1)
    """Independent seeded runs of bag -> train -> merge -> eval (`boom run --repeats N`): repeat k
    uses bagging.seed + k and train.seed + k in `<workdir>/repeat-<k>/`, and the top-level report
    aggregates them. 1 (default): one run in the work dir itself."""

    @model_validator(mode="after")
    def _merge_names_unique(self) -> "BoomConfig":
        names = [m.name for m in self.merge.merges]
        if len(set(names)) != len(names):
            raise ValueError(f"merge.merges names must be unique, got {names}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _absolute_local_paths(cls, data: Any) -> Any:
        """Relative paths mean the current directory of the command (or of the job), but Ray
        Train and Tune run workers in directories of their own: make them absolute here, once.
        Model references that are not local folders (hub ids, builtin:) are left as they are."""
        if not isinstance(data, dict):
            return data

        def output(p: Any) -> Any:
            return p if not isinstance(p, str) or "://" in p else os.path.abspath(os.path.expanduser(p))

        def model(p: Any) -> Any:
            if not isinstance(p, str) or "://" in p or p.startswith("builtin:"):
                return p
            local = os.path.expanduser(p)
            return os.path.abspath(local) if os.path.exists(local) else p

        def fix(section: str, key: str, how) -> None:
            node = data.get(section)
            if isinstance(node, dict) and key in node:
                node[key] = how(node[key])

        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
        if "workdir" in data:
            data["workdir"] = output(data["workdir"])
        fix("corpus", "path", output)
        fix("model", "name_or_path", model)
        fix("train", "deepspeed_config", model)
        fix("update", "current_model", model)
        fix("update", "old_corpus", output)
        fix("merge", "copy_files_from", model)
        fix("ray", "cluster_config", output)
        fix("eval", "cache_dir", output)
        ev = data.get("eval")
        if isinstance(ev, dict):
            for key in ("suites", "dev_suites"):
                if isinstance(ev.get(key), list):
                    ev[key] = [{**r, "path": output(r["path"])} if isinstance(r, dict) and "path" in r else r
                               for r in ev[key]]
        merge = data.get("merge")
        if isinstance(merge, dict) and isinstance(merge.get("merges"), list):
            merge["merges"] = [{**m, "base_model": model(m["base_model"])}
                               if isinstance(m, dict) and m.get("base_model") else m for m in merge["merges"]]
        return data



RunConfig = BoomConfig
"""The name BoomConfig had before 0.2, kept for scripts and notebooks; `ray.train.RunConfig` is Ray's."""

def validate_config(data: Any, source: str = "<config>") -> BoomConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return BoomConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_errors(exc.errors(), source)) from None


def read_yaml(path: Path, what: str) -> Any:
    """The YAML at `path`; a missing file or bad YAML is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BoomConfig:
    """Read and validate a run YAML; `overrides` maps dotted keys (``train.max_steps``) to values.

    Relative paths in the YAML are taken from the current directory, the repository root for
    `make demo` and for `ray job submit --working-dir .`."""
    path = Path(path)
    data = read_yaml(path, "config file")
    if isinstance(data, dict):
        set_dotted(data, overrides or {})
    return validate_config(data, str(path))


def set_dotted(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply `{"train.max_steps": 20, ...}` to a nested config mapping, in place. A missing or
    empty (null) section is created; a key below a value that is not a mapping is an error."""
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents, 1):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted}: {'.'.join(parents[:depth])} is a "
                                  f"{type(child).__name__} ({child!r}), not a mapping")
            node = child
        node[leaf] = value
    return data


def explicit_settings(cfg: BoomConfig) -> dict[str, Any]:
    """`cfg` as JSON with only the fields that were set, for whoever validates it again (a training
    worker, `derive`): a model setting left unset must stay unset there, so that it is still
    filled from the model's own sentence-transformers files (MiniLM's mean pooling, say) rather
    than from ModelConfig's default."""
    return cfg.model_dump(mode="json", exclude_unset=True)


def derive(cfg: BoomConfig, changes: dict[str, Any], source: str = "<derived config>") -> BoomConfig:
    """A validated copy of `cfg` with dotted keys changed."""
    return validate_config(set_dotted(explicit_settings(cfg), changes), source)


def bag_name(ratio: float) -> str:
    """Stable folder name of a bag: 0.2 -> bag20, 1.0 -> bag100, 0.125 -> bag12.5."""
    return f"bag{ratio * 100:g}"
