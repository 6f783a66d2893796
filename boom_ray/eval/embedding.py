"""Texts -> embeddings with a trained model, in-process for small inputs, on Ray Data for big ones.

The Ray Data path is an actor pool of encoders (`map_batches` with a callable class): each actor
loads the model once and embeds whole blocks, so a corpus spreads over every node of a cluster
(`eval.num_encoders` actors of `eval.encoder_cpus` CPUs / `eval.encoder_gpus` GPUs). Rows carry
their index, so blocks may finish in any order; retrieval consumes them as they arrive
(`ModelEncoder.stream`) and never holds the corpus matrix whole.

Inputs shorter than `eval.ray_min_texts` (default 2048) are embedded in the driver: starting an
actor and loading the model again costs more than embedding a few thousand short texts.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from boom_ray.config import EvalConfig, ModelConfig
from boom_ray.errors import BoomError
from boom_ray.eval.prompts import DeclaredPrompts, declared_prompts
from boom_ray.model.settings import resolve_model_config
from boom_ray.runtime.ray_session import init_ray, own_progress_only

VECTOR = "vector"
ROW = "__row"


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def _load_embedder(model_path: str, model_cfg: ModelConfig | None, use_gpu: bool, threads: int | None = None):
    """An Embedder of `model_path` on the GPU when one is asked for and present (`threads`: torch's
    CPU threads, for an encoder actor)."""
    import torch  # lazy: torch; boom eval --help, the report and the sweep driver import this module

    from boom_ray.model.embedder import Embedder  # lazy: torch; as above

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    device = "cuda" if use_gpu and torch.cuda.is_available() else None
    return Embedder.from_pretrained(model_path, model_cfg, device=device)


class EncodeBatch:
    """Ray Data callable class: one model per actor; a pyarrow block in, the block's `keep` columns
    plus a fixed-size-list `vector` column out (plain Parquet any reader understands)."""

    def __init__(self, model_path: str, model_cfg: dict[str, Any] | None, batch_size: int, text_col: str,
                 keep: Sequence[str], prompt: str | None, threads: int, use_gpu: bool):
        cfg = ModelConfig.model_validate(model_cfg) if model_cfg is not None else None
        self.model = _load_embedder(model_path, cfg, use_gpu, threads)
        self.batch_size, self.text_col, self.keep, self.prompt = batch_size, text_col, list(keep), prompt

    def __call__(self, block: pa.Table) -> pa.Table:
        texts = block.column(self.text_col).to_pylist()
        vectors = self.model.encode(texts, prompt=self.prompt, batch_size=self.batch_size)
        return pa.table({**{c: block.column(c) for c in self.keep}, VECTOR: vectors_to_arrow(vectors)})


def _cfg_payload(model_cfg: ModelConfig | None) -> dict[str, Any] | None:
    # Only the explicitly set fields travel, so the model folder's own settings still apply.
    return None if model_cfg is None else model_cfg.model_dump(include=model_cfg.model_fields_set)


def map_encoders(ds, model_path: str, eval_cfg: EvalConfig, *, text_col: str, keep: Sequence[str],
                 prompt: str | None = None, model_cfg: ModelConfig | None = None):
    """`ds` with a `vector` column, embedded by an actor pool sized by the eval config."""
    return ds.map_batches(
        EncodeBatch,
        fn_constructor_kwargs=dict(model_path=model_path, model_cfg=_cfg_payload(model_cfg),
                                   batch_size=eval_cfg.batch_size, text_col=text_col, keep=list(keep),
                                   prompt=prompt, threads=int(eval_cfg.encoder_cpus),
                                   use_gpu=eval_cfg.encoder_gpus > 0),
        batch_format="pyarrow", batch_size=None, concurrency=eval_cfg.num_encoders,
        num_cpus=eval_cfg.encoder_cpus, num_gpus=eval_cfg.encoder_gpus or None,
    )


def stream_with_ray(texts: Sequence[str], model_path: str, eval_cfg: EvalConfig, *, prompt: str | None = None,
                    model_cfg: ModelConfig | None = None, desc: str = "embed") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, embeddings) blocks of `texts` as the encoder actors finish them."""
    import ray.data  # lazy: ray; only inputs of eval.ray_min_texts texts or more go through Ray

    init_ray()
    block_rows = max(eval_cfg.batch_size * 4, 32)  # several blocks per actor keep the pool busy
    tables = [pa.table({ROW: pa.array(np.arange(s, min(s + block_rows, len(texts)), dtype=np.int64)),
                        "text": pa.array(list(texts[s:s + block_rows]), pa.string())})
              for s in range(0, len(texts), block_rows)]
    ds = map_encoders(ray.data.from_arrow(tables), model_path, eval_cfg, text_col="text", keep=[ROW],
                      prompt=prompt, model_cfg=model_cfg)
    ctx = ray.data.DataContext.get_current()
    saved = own_progress_only(ctx)  # one bar (ours, in texts) rather than one per operator
    try:
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not sys.stderr.isatty()) as bar:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = block.column(ROW).to_numpy()
                bar.update(len(rows))
                yield rows, arrow_to_vectors(block.column(VECTOR))
    finally:
        ctx.enable_progress_bars = saved


class ModelEncoder:
    """The encoder the evaluators see for a model directory: ``encoder(texts, prompt)``,
    ``encoder.stream(texts, prompt)``, ``encoder.format_query(query, instruction)`` and
    ``encoder.document_prompt``.

    Prompts follow `boom_ray.eval.prompts`: an instruction fills the model's query template; without
    one, a query gets the model's declared prompt, and stays as it is when the model declares none.
    ``use_model_prompts=False`` drops the model's prompts too (the report's "no prompt" scores).

    Small inputs go through a model loaded lazily in this process; inputs of at least
    ``eval_cfg.ray_min_texts`` texts go through the Ray Data actor pool."""

    def __init__(self, model_path: str, eval_cfg: EvalConfig | None = None, model_cfg: ModelConfig | None = None,
                 show_progress: bool = False, embedder=None, use_model_prompts: bool = True):
        """`embedder`: a model already loaded in this process (a sweep trial's resident one, with
        the trial's merged weights) to encode with, instead of loading `model_path`."""
        self.model_path = model_path
        self.eval_cfg = eval_cfg or EvalConfig()
        self.model_cfg = model_cfg
        if embedder is not None:
            self.settings = embedder.config
        else:
            # the settings from_pretrained would use, without loading the weights: only the prompt
            # template matters in the driver, and a 4B model should not be loaded twice to learn it
            self.settings = resolve_model_config(model_path, model_cfg)
        self.declared = declared_prompts(model_path, model_cfg) if use_model_prompts else DeclaredPrompts()
        self.document_prompt = self.declared.document
        self.show_progress = show_progress
        self._local = embedder

    def format_query(self, query: str, instruction: str | None = None) -> str:
        if instruction is None:
            if self.declared.query_prefix is not None:
                return self.declared.query_prefix + query
            if not self.declared.from_config:
                return query
            instruction = self.settings.default_instruction
        return self.settings.query_template.format(instruction=instruction, query=query)

    def _uses_ray(self, n: int) -> bool:
        return n >= self.eval_cfg.ray_min_texts

    def local_model(self):
        if self._local is None:
            self._local = _load_embedder(self.model_path, self.model_cfg, self.eval_cfg.encoder_gpus > 0)
        return self._local

    def stream(self, texts: Sequence[str], prompt: str | None = None, block_rows: int = 8192
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._uses_ray(len(texts)):
            yield from stream_with_ray(texts, self.model_path, self.eval_cfg, prompt=prompt,
                                       model_cfg=self.model_cfg)
            return
        for start in range(0, len(texts), block_rows):
            chunk = list(texts[start:start + block_rows])
            yield np.arange(start, start + len(chunk)), self._encode_local(chunk, prompt)

    def _encode_local(self, texts: list[str], prompt: str | None) -> np.ndarray:
        return self.local_model().encode(texts, prompt=prompt, batch_size=self.eval_cfg.batch_size,
                                         show_progress=self.show_progress and sys.stderr.isatty())

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        if not self._uses_ray(len(texts)):
            return self._encode_local(list(texts), prompt)
        out: np.ndarray | None = None
        for rows, vectors in self.stream(texts, prompt):
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        if out is None:
            raise BoomError(f"{self.model_path}: nothing to embed")
        return out
