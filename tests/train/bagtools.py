"""Tiny bags for training tests, written in the bag format (`<workdir>/bags/<bag>/`: one Parquet
file per task in BAG_SCHEMA + manifest.json) and a learnable retrieval task.

The task: a query is a few random words, its positive is the same words in another order and
its negatives are other random words. A random-init model cannot tell them apart at first (loss
near log(candidates)); after a few dozen steps it matches word sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("apple river stone cloud tiger music paper garden window silver engine forest candle "
         "planet orange bridge winter coffee rabbit mirror castle ocean pencil thunder").split()


def learnable_rows(n: int, seed: int, n_neg: int = 3, words_per_text: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=words_per_text, replace=False))
        pos = list(rng.permutation(words))
        negs = [" ".join(rng.choice(WORDS, size=words_per_text, replace=False)) for _ in range(n_neg)]
        rows.append({"query": " ".join(words), "pos": [" ".join(pos)], "neg": negs, "prompt": None, "type": None})
    return rows


def write_bag(workdir: str | Path, bag: str, tasks: dict[str, list[dict]], request: dict | None = None) -> Path:
    """Write `tasks` (task name -> rows) as a finished bag; returns its directory."""
    from boom_ray.corpus.reader import BAG_SCHEMA

    out = Path(workdir) / "bags" / bag
    for task, rows in sorted(tasks.items()):
        file = out / f"{task}.parquet"
        file.parent.mkdir(parents=True, exist_ok=True)
        cols = {"task": [task] * len(rows), "source": [f"{task}.jsonl"] * len(rows),
                "line": list(range(1, len(rows) + 1))}
        for key in ("query", "pos", "neg", "prompt", "type", "pos_scores", "neg_scores"):
            cols[key] = [r.get(key) for r in rows]
        pq.write_table(pa.Table.from_pydict(cols, schema=BAG_SCHEMA), file)
    manifest = {"bag": bag, "request": request or {"test": bag},
                "rows": {"selected": sum(len(r) for r in tasks.values())}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def run_config(workdir, model_path, bags: list[str], **train) -> dict:
    """A small run config (as a dict) for the tiny Qwen3."""
    base = {"global_batch_size": 8, "group_size": 4, "learning_rate": 2e-3, "max_steps": 30,
            "warmup_ratio": 0.1, "checkpoint_every": 100, "log_every": 5, "num_workers": 1,
            "cpus_per_worker": 0.5, "zero_stage": 2, "gradient_checkpointing": False, "bags": bags,
            "temperature": 0.05}
    base.update(train)
    return {"workdir": str(workdir), "corpus": {"path": str(Path(workdir) / "corpus")},
            "model": {"name_or_path": str(model_path), "pooling": "last", "max_query_length": 48,
                      "max_doc_length": 32},
            "train": base}
