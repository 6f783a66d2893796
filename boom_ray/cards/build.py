"""Model cards: the README.md of every export, merge and update output, in the Hugging Face /
sentence-transformers style (YAML front matter that `huggingface_hub.ModelCard` reads, then
Markdown). Pure: every function builds text from dicts; the write sites (train/export.py,
merge/task.py, update.py) gather the dicts and write the file, and `evaluated` adds the scores
once the run has evaluated the model.

A merge card carries the merge as a mergekit YAML: `boom merge mergekit.yaml --out DIR` with that
YAML (`mergekit_yaml_from_card` extracts it) reproduces the merged tensors bit for bit.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import yaml

BUNDLED_IDS = {"builtin:all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
TASK_TYPES = {"retrieval": "Retrieval", "sts": "STS", "classification": "Classification", "clustering": "Clustering"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MERGEKIT_MARK = "# mergekit config: boom merge mergekit.yaml --out DIR"


def hub_id(ref: str | None, is_local: bool) -> str | None:
    """The Hub id a model reference stands for, or None for a local folder / URI."""
    if ref is None:
        return None
    if ref in BUNDLED_IDS:
        return BUNDLED_IDS[ref]
    return ref if not is_local and "://" not in ref and _HUB_ID.match(ref) else None


def metric_id(name: str) -> str:
    """A metric's `model-index` type: ndcg@10 -> ndcg_at_10 (the names mteb and the Hub use)."""
    return re.sub(r"@(\d+)$", r"_at_\1", name)


def model_index(name: str, results: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`model-index` entries (one per suite, main metric first) of a results document."""
    if not results or not results.get("suites"):
        return []
    entries = []
    for s in results["suites"]:
        metrics = [{"type": metric_id(s["main_metric"]), "value": round(float(s["main"]), 6), "name": s["main_metric"]}]
        metrics += [{"type": metric_id(k), "value": round(float(v), 6), "name": k} for k, v in s["metrics"].items()
                    if isinstance(v, float) and k != s["main_metric"]]
        entries.append({"task": {"type": TASK_TYPES.get(s["type"], s["type"])},
                        "dataset": {"name": s["name"], "type": s["name"], "split": "test",
                                    "config": f"domain-{s['domain']}"}, "metrics": metrics})
    return [{"name": name, "results": entries}]


def front_matter_of(text: str) -> dict[str, Any]:
    """The YAML front matter of a card as a dict ({} without one); plain YAML, so the merge path
    reads its inputs' cards without importing huggingface_hub."""
    match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", text, re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:  # someone else's broken card: no metadata, not a failed card of ours
        meta = None
    return meta if isinstance(meta, dict) else {}


def front_matter(*, base_model: str | list[str] | None, tags: Sequence[str], datasets: Sequence[str],
                 name: str, results: dict[str, Any] | None, relation: str | None = None) -> str:
    meta: dict[str, Any] = {}
    if base_model:
        meta["base_model"] = base_model
        if relation:
            meta["base_model_relation"] = relation
    meta.update({"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                 "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "boom-ray", *tags],
                 "datasets": [str(d) for d in datasets]})
    index = model_index(name, results)
    if index:
        meta["model-index"] = index
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def usage(model_ref: str, prompts: dict[str, str]) -> str:
    """A sentence-transformers snippet with the query prompt the model was trained with."""
    named = [k for k, v in prompts.items() if v and k not in ("query", "document")]
    if prompts.get("query"):
        query_line, note = 'query_emb = model.encode(queries, prompt_name="query")', (
            "Queries take the `query` prompt the model was trained with; documents take none.")
    elif named:
        query_line = f'query_emb = model.encode(queries, prompt_name="{named[0]}")'
        note = ("Every training row carried its task's own instruction, so the model advertises no default "
                "query prompt; use the prompt of the task closest to yours (" +
                ", ".join(f"`{n}`" for n in named) + "), or none (`model.encode(queries)`), and "
                "measure which is better on your data.")
    else:
        query_line, note = "query_emb = model.encode(queries)", ("The model advertises no query prompt: "
                                                                  "queries go in as they are.")
    return "\n".join([
        "```python", "from sentence_transformers import SentenceTransformer", "",
        f"model = SentenceTransformer({model_ref!r})",
        'queries = ["what does a cartographer do"]',
        'documents = ["a person who makes maps", "a building where animals are kept"]',
        query_line, "doc_emb = model.encode(documents)", "print(model.similarity(query_emb, doc_emb))", "```",
        "", note])


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def settings_table(settings: dict[str, Any]) -> str:
    return _table([(f"`{k}`", f"`{v}`") for k, v in settings.items() if v is not None and v != {}], ["setting", "value"])


def data_section(bag_manifest: dict[str, Any] | None) -> str:
    """Row counts of a bag: per task, selected rows of the source's valid rows."""
    if not bag_manifest:
        return "The bag manifest was not available when this card was written."
    rows = bag_manifest.get("rows", {})
    tasks = bag_manifest.get("tasks", {})
    text = [f"{rows.get('selected', '?'):,} training rows" if isinstance(rows.get("selected"), int)
            else "training rows: unknown"]
    if isinstance(rows.get("kept"), int):
        text[0] += f" of {rows['kept']:,} valid corpus rows ({rows.get('quarantined', 0):,} quarantined)"
    for part in ("history", "new"):
        if isinstance(rows.get(part), int):
            text.append(f"- {part}: {rows[part]:,} rows")
    table = _table([(f"`{t}`", info.get("type") or "", info.get("selected"), info.get("source_rows", ""))
                    for t, info in sorted(tasks.items())], ["task", "type", "rows", "of source rows"])
    return "\n".join(text) + "\n\n" + table


def results_section(results: dict[str, Any] | None) -> str:
    """The body's Evaluation table (or the note that none was made), rewritten once the run evaluates."""
    if not results or not results.get("suites"):
        return ("Not evaluated when this card was written; `boom report` scores every model of a run "
                "(`report.md`, and mteb TaskResult files under `mteb_results/`).")
    rows = [(s["name"], s["type"], s["domain"], s["main_metric"], f"{s['main']:.4f}") for s in results["suites"]]
    rows += [("ID mean", "", "in", "main", "-" if results.get("id_mean") is None else f"{results['id_mean']:.4f}"),
             ("OOD mean", "", "out", "main", "-" if results.get("ood_mean") is None else f"{results['ood_mean']:.4f}")]
    return _table(rows, ["suite", "type", "domain", "metric", "score"])


def export_card(*, name: str, bag: str, base_model: str, base_hub_id: str | None, corpus: str,
                bag_manifest: dict[str, Any] | None, model_settings: dict[str, Any], train_settings: dict[str, Any],
                training: dict[str, Any], prompts: dict[str, str], model_ref: str,
                results: dict[str, Any] | None = None) -> str:
    """The card of one bag's fine-tuned model (`<workdir>/models/<bag>/`)."""
    ratio = (bag_manifest or {}).get("ratio")
    what = (f"a {ratio:.0%} bag" if isinstance(ratio, (int, float)) else f"the bag `{bag}`")
    tokens = training.get("tokens_seen")
    trained = (f"{training.get('steps', '?')} optimizer steps, {tokens:,} tokens, final loss "
               f"{training.get('final_loss')}." if isinstance(tokens, int) else "Training record: see boom_train.json.")
    body = [
        f"# {name}", "",
        f"A text-embedding model fine-tuned by [boom-ray](https://arxiv.org/abs/2602.05787) (BOOM: bagging + "
        f"model merging) from `{base_model}` on {what} (`{bag}`) of the corpus `{corpus}`: one contrastive "
        "(InfoNCE) fine-tune, the input of a BOOM merge.", "",
        "## Usage", "", usage(model_ref, prompts), "",
        "## Training data", "", data_section(bag_manifest), "",
        "## Training", "",
        trained, "", settings_table({**{f"model.{k}": v for k, v in model_settings.items()},
                            **{f"train.{k}": v for k, v in train_settings.items()}}), "",
        "## Evaluation", "", results_section(results), ""]
    return front_matter(base_model=base_hub_id, tags=["bagging", "contrastive"], datasets=[corpus], name=name,
                        results=results, relation="finetune") + "\n" + "\n".join(body)


def mergekit_config(request: dict[str, Any]) -> dict[str, Any]:
    """mergekit's `models:` form of a merge request (`MergeRequest.to_dict()`), which
    `boom_ray.merge.request.from_mergekit` maps back onto the same request."""
    out: dict[str, Any] = {"merge_method": request["method"]}
    if request.get("base_model"):
        out["base_model"] = request["base_model"]
    out["models"] = [{"model": m["path"], "parameters": _plain(m.get("parameters") or {})} for m in request["models"]]
    if request.get("parameters"):
        out["parameters"] = _plain(request["parameters"])
    if request.get("dtype"):
        out["out_dtype"] = request["dtype"]
    if request.get("copy_files_from"):
        out["tokenizer_source"] = request["copy_files_from"]
    return out


def _plain(value: Any) -> Any:
    """YAML-safe copy: numpy scalars become Python numbers (repr round-trips floats exactly)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def mergekit_block(request: dict[str, Any], settings: dict[str, Any] | None = None) -> str:
    sets = " ".join(f"--set {k}={v}" for k, v in (settings or {}).items())
    cmd = "boom merge mergekit.yaml --out DIR" + (f" {sets}" if sets else "")
    return "\n".join(["```yaml", MERGEKIT_MARK.replace("boom merge mergekit.yaml --out DIR", cmd),
                      yaml.safe_dump(mergekit_config(request), sort_keys=False, width=1000).rstrip(), "```"])


def mergekit_yaml_from_card(text: str) -> str:
    """The mergekit YAML of a merge or update card."""
    start = text.index("```yaml\n# mergekit config:") + len("```yaml\n")
    return text[start:text.index("```", start)]


def _inputs_table(request: dict[str, Any], inputs: Sequence[dict[str, Any]]) -> str:
    weights = [float((m.get("parameters") or {}).get("weight", 1.0)) for m in request["models"]]
    total = sum(weights) or 1.0
    rows = []
    for m, w, info in zip(request["models"], weights, list(inputs) + [{}] * len(request["models"])):
        rows.append((f"`{m['path']}`", info.get("bag") or "", info.get("rows") if info.get("rows") is not None else "",
                     f"{w:g}", f"{w / total:.3f}"))
    return _table(rows, ["model", "bag", "training rows", "weight", "normalised"])


def merge_card(*, name: str, request: dict[str, Any], inputs: Sequence[dict[str, Any]], base_hub_id: str | None,
               prompts: dict[str, str], model_ref: str, settings: dict[str, Any] | None = None,
               results: dict[str, Any] | None = None, title: str | None = None, intro: str | None = None,
               tags: Sequence[str] = ("merge", "mergekit"), datasets: Sequence[str] = ()) -> str:
    """The card of a merged model (`<workdir>/merges/<name>/`); `inputs` holds per input model its
    bag name and training rows where known (from its boom_train.json)."""
    method = request["method"]
    params = request.get("parameters") or {}
    base = f" with base model `{request['base_model']}` (task vectors)" if request.get("base_model") else ""
    body = [
        f"# {title or name}", "",
        intro or (f"A {method} merge{base} of {len(request['models'])} text-embedding models fine-tuned by "
                  "[boom-ray](https://arxiv.org/abs/2602.05787) on bags (random subsets) of one corpus: "
                  "BOOM's bagging + model merging, one model at the cost of one at inference."), "",
        "## Merged models", "", _inputs_table(request, inputs), "",
        f"Method `{method}`" + (f", parameters `{params}`" if params else "") +
        (f", output dtype `{request['dtype']}`" if request.get("dtype") else "") + ".", "",
        "## Reproduce", "",
        "This config (mergekit's `models:` format), run with `boom merge`, reproduces the merged "
        "tensors bit for bit:", "",
        mergekit_block(request, settings), "",
        "## Usage", "", usage(model_ref, prompts), "",
        "## Evaluation", "", results_section(results), ""]
    return front_matter(base_model=base_hub_id, tags=[*tags, method], datasets=datasets, name=name,
                        results=results, relation="merge" if base_hub_id else None) + "\n" + "\n".join(body)


def update_card(*, name: str, request: dict[str, Any], inputs: Sequence[dict[str, Any]], lineage: dict[str, Any],
                data: dict[str, Any], base_hub_id: str | None, prompts: dict[str, str], model_ref: str,
                settings: dict[str, Any] | None = None, results: dict[str, Any] | None = None) -> str:
    """The card of `boom update`'s output (`<workdir>/merges/updated/`)."""
    w = lineage["merge"]["weights"]
    intro = (f"An incremental update of `{lineage['current_model']['path']}` by "
             "[boom-ray](https://arxiv.org/abs/2602.05787): an update model was fine-tuned from it on "
             f"{data.get('new', 0):,} new rows (`{lineage['new_corpus']}`) plus a {lineage['history_ratio']:.0%} "
             f"sample of the old corpus ({data.get('history', 0):,} of {data.get('old_corpus', 0):,} rows, "
             f"`{lineage['old_corpus']}`), then merged into the current model by multislerp with weights "
             f"{w[0]:g} (current) and {w[1]:g} (update), the sizes of the data behind each.")
    return merge_card(name=name, request=request, inputs=inputs, base_hub_id=base_hub_id, prompts=prompts,
                      model_ref=model_ref, settings=settings, results=results, intro=intro,
                      tags=("merge", "incremental-update"),
                      datasets=[lineage["old_corpus"], lineage["new_corpus"]])
