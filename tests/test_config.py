"""The run config: defaults, errors that name the YAML path, overrides, every shipped YAML valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from boom_ray.cli.common import parse_overrides
from boom_ray.config import (BUNDLED_MINILM, ConfigError, BoomConfig, bag_name, derive, explicit_settings, load_config,
                             parse_size, validate_config)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_reference_recipe():
    cfg = validate_config({"workdir": "w", "corpus": {"path": "c"}})
    assert cfg.bagging.ratios == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert cfg.train.temperature == 0.02 and cfg.train.group_size == 8
    assert cfg.train.global_batch_size == 256 and cfg.train.learning_rate == 5e-5
    assert cfg.model.query_template == "Instruct: {instruction}\nQuery: {query}"
    assert cfg.corpus.max_bad_fraction == 0.0
    assert [bag_name(r) for r in cfg.bagging.ratios] == ["bag20", "bag40", "bag60", "bag80", "bag100"]


def test_errors_name_the_path_and_what_was_expected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("workdir: w\ncorpus:\n  path: c\n  max_bad_fraction: 2\nbagging:\n  ratios: [0.2, 0]\n"
                    "  sede: 1\ntrain:\n  zero_stage: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "corpus.max_bad_fraction: Input should be less than or equal to 1" in text
    assert "bagging.ratios: Value error, each ratio must be in (0, 1]" in text
    assert "bagging.sede: unknown key" in text
    assert "train.zero_stage: Input should be 0, 1, 2 or 3" in text


def test_missing_required_keys_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="corpus: required key is missing"):
        validate_config({"workdir": "w"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("workdir: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("workdir: w\ncorpus: {path: c}\n")
    cfg = load_config(path, parse_overrides(["train.max_steps=20", "bagging.ratios=[0.5, 1.0]"]))
    assert cfg.train.max_steps == 20 and cfg.bagging.ratios == [0.5, 1.0]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.max_steps"])


def test_sizes_parse():
    assert parse_size("512MB") == 512 * 10**6 and parse_size("1GiB") == 2**30 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_size("lots")


@pytest.mark.parametrize("path", sorted((REPO / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    """Run configs validate as BoomConfig; grid files (`cells`) validate their base run and every
    cell's derived run config."""
    from boom_ray.workflows.ablations import is_grid_file, load_grid

    if is_grid_file(path):
        assert load_grid(path).cells
    else:
        load_config(path)


def test_local_paths_become_absolute_and_uris_and_hub_ids_stay(tmp_path, monkeypatch):
    """Ray Train runs workers in directories of their own: a relative work dir must not follow."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suite").mkdir()
    cfg = validate_config({"workdir": "runs/x", "corpus": {"path": "corpus"},
                           "model": {"name_or_path": "Qwen/Qwen3-4B"},
                           "eval": {"suites": [{"path": "suite"}]}})
    assert cfg.workdir == str(tmp_path / "runs" / "x") and cfg.corpus.path == str(tmp_path / "corpus")
    assert cfg.model.name_or_path == "Qwen/Qwen3-4B"  # not a local folder: a hub id
    assert cfg.eval.suites[0].path == str(tmp_path / "suite")
    uri = validate_config({"workdir": "s3://bucket/run", "corpus": {"path": "file:///data/c"}})
    assert uri.workdir == "s3://bucket/run" and uri.corpus.path == "file:///data/c"


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Tune runs each trial in its own working directory, so the trials get absolute paths."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    cfg = validate_config({"workdir": "runs/x", "corpus": {"path": "c"},
                           "merge": {"merges": [{"name": "ta", "method": "task_arithmetic", "base_model": "base"},
                                                {"name": "bagbase", "method": "ties", "base_model": "bag100"}],
                                     "copy_files_from": "base"},
                           "eval": {"dev_suites": [{"path": "suites/dev"}]}})
    assert cfg.workdir == str(tmp_path / "runs" / "x")
    assert cfg.eval.dev_suites[0].path == str(tmp_path / "suites" / "dev")
    assert [m.base_model for m in cfg.merge.merges] == [str(tmp_path / "base"), "bag100"]
    assert cfg.model.name_or_path == BUNDLED_MINILM  # builtin: reference untouched
    assert cfg.merge.copy_files_from == str(tmp_path / "base")
    for ref in ("bag100", "Qwen/Qwen3-4B", "s3://bucket/model"):  # bag names, hub ids and URIs stay
        other = validate_config({"workdir": "w", "corpus": {"path": "c"}, "merge": {"copy_files_from": ref}})
        assert other.merge.copy_files_from == ref
    assert validate_config({"workdir": "w", "corpus": {"path": "c"}}).merge.copy_files_from is None


def test_overrides_into_an_empty_section_or_a_non_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("workdir: w\ncorpus: {path: c}\nupdate:\n")
    cfg = load_config(path, {"update.current_model": "m", "update.old_corpus": "old"})
    assert cfg.update.current_model == "m" and cfg.update.old_corpus.endswith("old")
    with pytest.raises(ConfigError, match="cannot set workdir.x: workdir is a str"):
        load_config(path, {"workdir.x": 1})
    with pytest.raises(ConfigError, match=r"cannot set corpus.path.deep: corpus.path is a str"):
        load_config(path, {"corpus.path.deep": 1})


def test_unset_model_settings_stay_unset_for_workers_and_derived_configs():
    """A training worker re-validates the config it is sent; MiniLM's own files say mean pooling,
    which must win over ModelConfig's default ('last') there as it does in the driver."""
    from boom_ray.model.settings import resolve_model_config

    cfg = validate_config({"workdir": "w", "corpus": {"path": "c"}, "model": {"max_doc_length": 64}})
    for again in (BoomConfig.model_validate(explicit_settings(cfg)), derive(cfg, {"train.max_steps": 3})):
        assert again.model.model_fields_set == cfg.model.model_fields_set == {"max_doc_length"}
        resolved = resolve_model_config(again.model.name_or_path, again.model)
        assert resolved.pooling == "mean" and resolved.max_doc_length == 64
