"""The streaming merge end to end on tiny checkpoints: results, chunking, shards, files, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from boom_ray.config import MergeConfig
from boom_ray.merge.executor import InputMismatchError, MergeError, NonFiniteError
from boom_ray.merge.io import CheckpointError, index_model
from boom_ray.merge.methods import merge_tensors as merge_arrays
from boom_ray.merge.request import MANIFEST, MergeRequest, ModelInput
from boom_ray.merge.task import MergeOutputExists, merge

from .conftest import SHAPES, load_dir, make_model


def merge_tensors(*args, **kwargs) -> torch.Tensor:
    """The numpy reference merge, as a torch tensor for comparisons."""
    return torch.from_numpy(merge_arrays(*args, **kwargs))


BIG = MergeConfig(memory_budget="64MB")
TINY = MergeConfig(memory_budget=40_000, max_shard_size=4_000)
"""Small enough that every 2-D tensor is cut into several chunks and the output into shards."""

CASES = {
    "multislerp": ({}, False, {}),
    "multislerp+base": ({}, True, {}),
    "linear": ({}, False, {}),
    "task_arithmetic": ({"lambda": 0.7}, True, {}),
    "ties": ({"normalize": True}, True, {"density": 0.4}),
    "dare_ties": ({}, True, {"density": 0.4}),
    "dare_linear": ({"rescale": True}, True, {"density": 0.6}),
    "breadcrumbs_ties": ({}, True, {"density": 0.5, "gamma": 0.05}),
    "della": ({}, True, {"density": 0.5, "epsilon": 0.2}),
    "karcher": ({"max_iter": 5}, False, {}),
    "nuslerp+base": ({}, True, {}),
    "nuslerp": ({"nuslerp_flatten": False, "nuslerp_row_wise": True}, False, {}),
    "model_stock": ({"filter_wise": True}, True, {}),
    "sce": ({"select_topk": 0.4}, True, {}),
}


def n_inputs(case: str) -> int:
    return 2 if case.startswith("nuslerp") else 3


def request(models, case: str, **kw) -> MergeRequest:
    params, with_base, per_model = CASES[case]
    method = case.split("+")[0]
    return MergeRequest(method, [ModelInput(str(m), {"weight": w, **per_model})
                                 for m, w in zip(models[:n_inputs(case)], [0.2, 0.6, 1.0])],
                        str(models[3]) if with_base else None, params, **kw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_equals_in_memory_reference_chunked_or_not(models, tmp_path, case):
    req = request(models, case)
    whole = load_dir(Path(merge(req, str(tmp_path / "whole"), BIG, progress=False) and tmp_path / "whole"))
    merge(req, str(tmp_path / "chunked"), TINY, progress=False)
    chunked = load_dir(tmp_path / "chunked")
    inputs = [load_dir(m) for m in models]
    params, with_base, per_model = CASES[case]
    n = n_inputs(case)
    for name, got in whole.items():
        ref = merge_tensors(req.method, [m[name] for m in inputs[:n]], [0.2, 0.6, 1.0][:n],
                            inputs[3][name] if with_base else None, params, [per_model] * n, tensor_name=name)
        assert torch.allclose(got, ref, rtol=0, atol=1e-6 * float(ref.abs().max())), name
        assert torch.allclose(chunked[name], got, rtol=0, atol=1e-6 * float(ref.abs().max())), name


@pytest.mark.parametrize("case", ["multislerp", "ties"])
def test_output_bytes_do_not_depend_on_threads_and_nothing_stays_mapped(models, tmp_path, case):
    outs = []
    for threads in (1, 3):
        out = tmp_path / f"t{threads}"
        merge(request(models, case), str(out), MergeConfig(memory_budget=60_000, threads=threads), progress=False)
        outs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.safetensors"))})
    assert outs[0] == outs[1]
    maps = Path("/proc/self/maps")
    if maps.exists():  # every window was unmapped when the merge returned (the RSS bound relies on it)
        mapped = maps.read_text()
        assert not [m for m in models if str(m) in mapped] and str(tmp_path / "t3") not in mapped


def test_shards_index_files_and_manifest(models, tmp_path):
    out = tmp_path / "out"
    manifest = merge(request(models, "multislerp"), str(out), TINY, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and shards == sorted(set(index["weight_map"].values()))
    for shard in shards:  # each shard holds at most max_shard_size bytes unless a tensor alone is bigger
        with safe_open(str(out / shard), "pt") as f:
            sizes = [f.get_tensor(k).numel() * 4 for k in f.keys()]
            assert sum(sizes) <= 4_000 or len(sizes) == 1
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in load_dir(out).values())
    # non-weight files come from the first model, including sentence-transformers subfolders
    assert json.loads((out / "config.json").read_text())["seed"] == 0
    assert (out / "1_Pooling" / "config.json").is_file() and (out / "modules.json").is_file()
    assert json.loads((out / "tokenizer.json").read_text())["seed"] == 0
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["method"] == "multislerp" and [m["parameters"]["weight"] for m in manifest["models"]] == [0.2, 0.6, 1.0]
    assert all(len(m["fingerprint"]) == 32 for m in manifest["models"])
    assert manifest["models"][0]["fingerprint"] != manifest["models"][1]["fingerprint"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_single_file_output_dtype_and_copy_source(models, tmp_path):
    out = tmp_path / "out"
    req = request(models, "task_arithmetic", dtype="bfloat16", copy_files_from=str(models[1]))
    merge(req, str(out), BIG, progress=False)
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    merged = load_dir(out)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["torch_dtype"] == "bfloat16"


def test_integer_tensors_are_copied_from_the_first_model(tmp_path):
    ids = torch.arange(12).view(1, 12)
    ms = [make_model(tmp_path / f"m{i}", i, extra={"position_ids": ids}) for i in range(2)]
    merge(MergeRequest("multislerp", [ModelInput(str(m), {"weight": 1.0}) for m in ms]), str(tmp_path / "o"),
          TINY, progress=False)
    assert torch.equal(load_dir(tmp_path / "o")["position_ids"], ids)


def _merge_three(tmp_path, method: str, dtype: torch.dtype):
    """Three models stored in `dtype`, merged with weights 1, 2, 3: (output, inputs) tensors."""
    ms = [make_model(tmp_path / f"m{i}", i, dtype=dtype) for i in range(3)]
    req = MergeRequest(method, [ModelInput(str(m), {"weight": w}) for m, w in zip(ms, [1, 2, 3])])
    merge(req, str(tmp_path / "o"), TINY, progress=False)
    return load_dir(tmp_path / "o"), [load_dir(m) for m in ms]


def test_bfloat16_inputs_merge_in_float32(tmp_path):
    got, inputs = _merge_three(tmp_path, "multislerp", torch.bfloat16)
    for name, t in got.items():
        assert t.dtype == torch.bfloat16
        ref = merge_tensors("multislerp", [i[name] for i in inputs], [1, 2, 3])
        # float32 maths rounded once to bfloat16: within half a bfloat16 ulp (2^-9 relative) of it
        assert ((t.float() - ref).abs() <= ref.abs() * 2**-8 + 1e-30).all(), name


def test_float64_inputs_keep_float64(tmp_path):
    """F64 is a float dtype too: staged and written at 8 bytes per element, the float32 maths
    stored back as float64."""
    got, inputs = _merge_three(tmp_path, "linear", torch.float64)
    for name, t in got.items():
        assert t.dtype == torch.float64
        ref = merge_tensors("linear", [i[name].float() for i in inputs], [1, 2, 3])
        assert torch.allclose(t.float(), ref, rtol=1e-6, atol=1e-7), name


@pytest.mark.parametrize("change,message", [
    ({"missing": "layer.1.proj.weight"}, r"tensor 'layer.1.proj.weight' of .*m0 is missing from .*bad"),
    ({"shape": ("layer.0.norm.weight", (25,))}, r"tensor 'layer.0.norm.weight' has shape \[25\] in .*bad"),
    ({"dtype": "head.bias"}, r"tensor 'head.bias' has dtype F16 in .*bad but F32 in .*m0"),
    ({"extra": "surprise"}, r"tensor 'surprise' of .*bad is missing from .*m0"),
])
def test_inputs_are_validated_before_any_work(models, tmp_path, change, message):
    shapes, extra = dict(SHAPES), {}
    if "missing" in change:
        shapes.pop(change["missing"])
    if "shape" in change:
        shapes[change["shape"][0]] = change["shape"][1]
    if "dtype" in change:
        shapes.pop(change["dtype"])
        extra[change["dtype"]] = torch.zeros(7, dtype=torch.float16)
    if "extra" in change:
        extra["surprise"] = torch.zeros(3)
    bad = make_model(tmp_path / "bad", 5, shapes=shapes, extra=extra)
    req = MergeRequest("linear", [ModelInput(str(models[0]), {"weight": 1}), ModelInput(str(bad), {"weight": 1})])
    with pytest.raises(InputMismatchError, match=message):
        merge(req, str(tmp_path / "out"), BIG, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_nan_in_result_names_the_tensor(models, tmp_path):
    bad = make_model(tmp_path / "bad", 7, extra={"layer.0.norm.weight": torch.full((24,), float("inf"))})
    req = MergeRequest("linear", [ModelInput(str(models[0]), {"weight": 1}), ModelInput(str(bad), {"weight": 1})])
    with pytest.raises(NonFiniteError, match="'layer.0.norm.weight' has NaN or Inf"):
        merge(req, str(tmp_path / "out"), BIG, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_existing_output_needs_force(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    req = request(models, "linear")
    with pytest.raises(MergeOutputExists, match="already exists; pass --force"):
        merge(req, str(out), BIG, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    merge(req, str(out), BIG, progress=False, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_bad_checkpoints_and_budget(tmp_path, models):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no \\*.safetensors weights"):
        index_model(str(tmp_path / "empty"))
    trunc = make_model(tmp_path / "trunc", 1)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated file"):
        index_model(str(trunc))
    with pytest.raises(MergeError, match="memory_budget of 1000 bytes is too small"):
        merge(request(models, "linear"), str(tmp_path / "o"), MergeConfig(memory_budget=1000), progress=False)


def test_output_loads_in_transformers(tmp_path):
    """A tiny real Qwen3 merged with itself perturbed loads back and runs."""
    from transformers import Qwen3Config, Qwen3ForCausalLM  # lazy: transformers

    cfg = Qwen3Config(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=16, vocab_size=128, num_hidden_layers=2)
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        Qwen3ForCausalLM(cfg).save_pretrained(str(tmp_path / f"q{seed}"))
        paths.append(tmp_path / f"q{seed}")
    req = MergeRequest("multislerp", [ModelInput(str(p), {"weight": w}) for p, w in zip(paths, [0.4, 0.6])])
    merge(req, str(tmp_path / "merged"), MergeConfig(memory_budget="8MB", max_shard_size=20_000), progress=False)
    model = Qwen3ForCausalLM.from_pretrained(str(tmp_path / "merged"))
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    assert len(os.listdir(tmp_path / "merged")) > 3


def test_della_row_longer_than_a_block_is_a_clear_error(tmp_path):
    shapes = {"wide.weight": (3, 2_000)}
    ms = [make_model(tmp_path / f"w{i}", i, shapes=shapes) for i in range(2)]
    req = MergeRequest("della", [ModelInput(str(ms[0]), {"weight": 1.0, "density": 0.5})], str(ms[1]))
    with pytest.raises(MergeError, match="whole rows of 'wide.weight' \\(2000 elements\\)"):
        merge(req, str(tmp_path / "out"), TINY, progress=False)
    merge(req, str(tmp_path / "ok"), BIG, progress=False)  # rows fit: fine
    got = load_dir(tmp_path / "ok")["wide.weight"]
    ins = [load_dir(m)["wide.weight"] for m in ms]
    ref = merge_tensors("della", [ins[0]], [1.0], ins[1], {}, [{"density": 0.5}], tensor_name="wide.weight")
    assert torch.allclose(got, ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
