"""The float32 equality set of benchmarks/merge.py: every method boom-ray shares with mergekit
0.1.5, run by mergekit-yaml and by `boom merge` from the SAME YAML on four tiny random Qwen3
models (transformers `Qwen3Config`, seeds 0-3; the fourth is the base), every output tensor
compared: max |boom - mergekit| / max |mergekit| per tensor, the worst tensor reported (target
<= 1e-5). The cases include per-layer gradients and `filter:` entries.

Methods with random masks (dare_*, della*) cannot share torch's random numbers, so they are run
twice: at density 1 (no masking: every other step of the formula is compared exactly), and at
density < 1 on one model with L1 rescaling, compared statistically (`mask_stats`): the fraction
of entries that differ from the base against the density, and the L1 norm of each task vector,
which rescaling preserves whatever the mask. (DELLA's keep probability varies with the rank but
averages to the density, so its spread is at most the binomial one used for the z-scores.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch
import yaml
from safetensors import safe_open


def tiny_qwen3(path: Path, seed: int) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM  # lazy: transformers, only to build the models

    torch.manual_seed(seed)
    cfg = Qwen3Config(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=512, num_hidden_layers=2, tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg).float()
    with torch.no_grad():  # norms are ones at init: make them differ between models
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path), safe_serialization=True)


def _index(d: Path) -> dict[str, Path]:
    idx = d / "model.safetensors.index.json"
    if idx.exists():
        return {k: d / v for k, v in json.loads(idx.read_text())["weight_map"].items()}
    out = {}
    for f in d.glob("*.safetensors"):
        with safe_open(str(f), "pt") as h:
            out.update({k: f for k in h.keys()})
    return out


def _tensors(*dirs: Path):
    """(name, tensors of every dir) for each tensor, one tensor at a time."""
    indexes = [_index(d) for d in dirs]
    if any(set(i) != set(indexes[0]) for i in indexes):
        raise RuntimeError(f"tensor names differ: {sorted(set(indexes[0]) ^ set(indexes[-1]))[:5]}")
    for name in sorted(indexes[0]):
        ts = []
        for i in indexes:
            with safe_open(str(i[name]), "pt") as f:
                ts.append(f.get_tensor(name).float())
        if any(t.shape != ts[0].shape for t in ts):
            raise RuntimeError(f"{name}: shapes differ")
        yield name, ts


def max_rel_diff(a_dir: Path, b_dir: Path) -> tuple[float, str]:
    """max over tensors of max|a - b| / max|b| (b = mergekit), streaming one tensor at a time."""
    worst, where = 0.0, ""
    for name, (a, b) in _tensors(a_dir, b_dir):
        rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        if rel > worst:
            worst, where = rel, name
    return worst, where


def mask_stats(a_dir: Path, b_dir: Path, base_dir: Path, density: float) -> dict:
    """Random-mask methods on one model, per tool: the fraction of all entries that differ from
    the base (pooled over tensors) and its z-score against the density's binomial spread, the
    worst per-tensor |z| over tensors of at least 1024 entries (where the normal approximation
    holds), and the worst relative difference of the task vectors' L1 norms between the tools."""
    kept, total, z_worst, l1_worst = [0, 0], 0, [0.0, 0.0], 0.0
    for name, (a, b, base) in _tensors(a_dir, b_dir, base_dir):
        n = a.numel()
        total += n
        for k, t in enumerate((a, b)):
            c = int((t != base).sum())
            kept[k] += c
            if n >= 1024:
                z_worst[k] = max(z_worst[k], abs(c / n - density) / (density * (1 - density) / n) ** 0.5)
        la, lb = float((a - base).abs().double().sum()), float((b - base).abs().double().sum())
        l1_worst = max(l1_worst, abs(la - lb) / lb)
    sd = (density * (1 - density) / total) ** 0.5
    tools = ("boom", "mergekit")
    return {"entries": total, "kept_fraction": {t: kept[k] / total for k, t in enumerate(tools)},
            "z_kept_fraction": {t: (kept[k] / total - density) / sd for k, t in enumerate(tools)},
            "max_abs_z_per_tensor": dict(zip(tools, z_worst)), "max_rel_diff_l1": l1_worst}


def _models(paths, weights, **per_model) -> list[dict]:
    return [{"model": str(p), "parameters": {"weight": w, **{k: v[i] for k, v in per_model.items()}}}
            for i, (p, w) in enumerate(zip(paths, weights))]


W3 = [0.3, 0.5, 0.7]
GRADIENT = [0.2, 0.9]
FILTERED = [{"filter": "mlp", "value": 0.7}, {"filter": "self_attn", "value": [0.4, 1.0]}, {"value": 1.1}]


def cases(m: list[Path], base: Path) -> dict[str, dict]:
    """Case name -> mergekit YAML (without dtype); m: three models."""
    b = {"base_model": str(base)}
    c = {
        "multislerp": {"merge_method": "multislerp", "models": _models(m, [0.2, 0.5, 0.9])},
        "multislerp+base": {"merge_method": "multislerp", **b, "models": _models(m, [0.2, 0.5, 0.9])},
        "linear": {"merge_method": "linear", "parameters": {"normalize": True}, "models": _models(m, [0.2, 0.5, 0.9])},
        "slerp": {"merge_method": "slerp", **b, "parameters": {"t": 0.3}, "models": [{"model": str(base)}, {"model": str(m[0])}]},
        "slerp+gradient": {"merge_method": "slerp", **b, "parameters": {"t": [0.1, 0.8]},
                           "models": [{"model": str(base)}, {"model": str(m[0])}]},
        "task_arithmetic": {"merge_method": "task_arithmetic", **b, "parameters": {"lambda": 0.8}, "models": _models(m, W3)},
        "task_arithmetic+filters": {"merge_method": "task_arithmetic", **b, "parameters": {"lambda": FILTERED},
                                    "models": _models(m, [GRADIENT, 0.5, [0.7, 0.1, 0.4]])},
        "ties": {"merge_method": "ties", **b, "parameters": {"normalize": True, "lambda": 1.0},
                 "models": _models(m, W3, density=[0.5, 0.3, 0.8])},
        "ties+rescale+gradient": {"merge_method": "ties", **b, "parameters": {"rescale": True, "density": [0.3, 0.8]},
                                  "models": _models(m, W3, density=[[0.6, 0.2], None, 0.9])},
        "breadcrumbs": {"merge_method": "breadcrumbs", **b, "models": _models(m, W3, density=[0.5, 0.6, 0.8],
                                                                             gamma=[0.05, 0.01, 0.1])},
        "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", **b, "parameters": {"normalize": True},
                             "models": _models(m, W3, density=[0.5, 0.6, 0.8], gamma=[0.05, 0.01, 0.1])},
        "sce": {"merge_method": "sce", **b, "parameters": {"select_topk": 0.4}, "models": _models(m, W3)},
        "sce+all": {"merge_method": "sce", **b, "models": _models(m, W3)},
        "model_stock": {"merge_method": "model_stock", **b, "models": [{"model": str(p)} for p in m]},
        "model_stock+filter_wise": {"merge_method": "model_stock", **b, "parameters": {"filter_wise": True},
                                    "models": [{"model": str(p)} for p in m]},
        "karcher": {"merge_method": "karcher", "models": [{"model": str(p)} for p in m]},
        "karcher+base": {"merge_method": "karcher", **b, "models": [{"model": str(p)} for p in m[:2]]},
        "nuslerp": {"merge_method": "nuslerp", "models": _models(m[:2], [0.3, 0.9])},
        "nuslerp+base+rows": {"merge_method": "nuslerp", **b, "parameters": {"nuslerp_flatten": False},
                              "models": _models(m[:2], [0.3, 0.9])},
    }
    for method in ("dare_ties", "dare_linear", "della", "della_linear"):
        c[f"{method}@density1"] = {"merge_method": method, **b, "parameters": {"lambda": 0.9},
                                   "models": _models(m, W3, density=[1.0, 1.0, 1.0])}
    for case in c.values():  # a None is a model that sets nothing: the top-level value applies
        for entry in case["models"]:
            if "parameters" in entry:
                entry["parameters"] = {k: v for k, v in entry["parameters"].items() if v is not None}
    return c


RANDOM = {"dare_linear": {"density": 0.3}, "della_linear": {"density": 0.4, "epsilon": 0.2}}


def _run(mergekit: Path, boom: list[str], work: Path, case: str, cfg: dict) -> tuple[Path, Path]:
    ypath = work / f"{case}.yaml"
    ypath.write_text(yaml.safe_dump(cfg | {"dtype": "float32"}))
    subprocess.run([str(mergekit), str(ypath), str(work / f"mk-{case}"), "--quiet"], check=True, capture_output=True)
    subprocess.run([*boom, str(ypath), "--out", str(work / f"boom-{case}"), "--force"], check=True, capture_output=True)
    return work / f"boom-{case}", work / f"mk-{case}"


def equality(mergekit: Path, boom: list[str], out: Path, only: str | None = None) -> dict:
    work = out / "merge_equality"
    shutil.rmtree(work, ignore_errors=True)
    models = []
    for seed in range(4):
        tiny_qwen3(work / f"m{seed}", seed)
        models.append(work / f"m{seed}")
    results = {}
    for case, cfg in cases(models[:3], models[3]).items():
        if only and only not in case:
            continue
        rel, where = max_rel_diff(*_run(mergekit, boom, work, case, cfg))
        results[case] = {"max_rel_diff": rel, "worst_tensor": where}
        print(f"equality {case:26s} max rel diff {rel:.2e} ({where})", flush=True)
    for method, params in RANDOM.items():
        if only and only not in method:
            continue
        cfg = {"merge_method": method, "base_model": str(models[3]),
               "models": [{"model": str(models[0]), "parameters": {"weight": 1.0, **params}}]}
        a, b = _run(mergekit, boom, work, f"{method}@random", cfg)
        stats = mask_stats(a, b, models[3], params["density"])
        results[f"{method}@random"] = stats
        print(f"statistics {method}: {stats}", flush=True)
    return results
