"""What a run will ask for and whether it fits, before anything starts: pure estimation functions.

`boom plan` (boom_ray/cli/plan.py) feeds these with a run config, row counts from the corpus or its
bag manifests (boom_ray/plan/inputs.py) and cluster.yaml's node types. Nothing here imports torch
or touches a GPU, so a plan costs seconds on a laptop.

Per-GPU memory of one training worker, in bytes (P = parameters, N = ranks, ZeRO stage as
DeepSpeed runs it, boom_ray.train.ds_config.effective_zero_stage):

* weights: P x 2 in bf16/fp16 (P x 4 in fp32); ZeRO-3 keeps 1/N, plus the parameters gathered for
  the layers in flight (the larger of the embedding matrix and two decoder layers);
* gradients: the same dtype as the weights, fp32 where several backward passes are summed per
  optimizer step under mixed precision (accumulation, GradCache), 1/N from ZeRO-2 on;
* optimizer: AdamW's two fp32 moments (8 P), plus fp32 master weights (4 P) under mixed
  precision, 1/N from ZeRO-1 on: the ZeRO paper's 16 bytes per parameter in all;
* activations: what autograd keeps for the backward pass, per token and per decoder layer. The
  coefficients below were counted with ``torch.autograd.graph.saved_tensors_hooks`` on Qwen3
  layers of several shapes (hidden, intermediate, query and key/value widths varied one at a
  time); with gradient checkpointing each layer keeps only its input (hidden x dtype) and one
  layer is recomputed at a time. The backward pass frees each layer's saved tensors as it makes
  that layer's gradients, so the peak is what the forward pass saved (what a CPU step measures
  once RSS counts only what the step allocates: tests/train/test_step_memory.py). The tokens
  are those of the per-rank batch (queries + their groups of passages, padded to the maximum
  lengths: an upper bound), or of one mini-batch with GradCache (train.mini_batch_size);
* communication buckets: DeepSpeed's defaults (5e8 elements for the reduce / all-reduce bucket,
  and the ZeRO-3 prefetch bucket of 5e7), capped at the model's size; none for one rank at
  ZeRO 0 (boom-ray turns that all-reduce off).

A plan "fits" when the total stays within FIT_FRACTION of the GPU's memory: the rest is the CUDA
context, NCCL's buffers and allocator fragmentation, which torch.cuda.max_memory_allocated does
not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

FIT_FRACTION = 0.9
DEFAULT_MFU = 0.4
"""Model FLOPs utilisation assumed for the default throughput: 40 % of the GPU's dense bf16 peak,
what well-tuned ZeRO-3 fine-tunes of few-billion-parameter models reach on A100/H100."""
PEAK_BF16_FLOPS = {"A100": 312e12, "H100": 989e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}
DEFAULT_GPU = "A100"
"""GPU assumed for throughput and memory when neither --gpu-memory nor the cluster names one."""
DS_REDUCE_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a transformer that decide its memory and compute (from config.json)."""

    name: str
    family: str
    """"decoder" (Qwen3, Llama, Mistral: RMSNorm + SwiGLU) or "encoder" (BERT, MiniLM)."""
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tie_embeddings: bool = True
    max_positions: int = 0

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        h, i = self.hidden, self.intermediate
        if self.family == "encoder":  # q, k, v, o with biases; two-matrix MLP; two LayerNorms
            return 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
        # q, k, v, o projections (no bias), q/k RMSNorm, SwiGLU MLP, two RMSNorms
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + 2 * self.head_dim + 3 * h * i + 2 * h

    @property
    def embedding_params(self) -> int:
        if self.family == "encoder":  # word, position, token type embeddings, LayerNorm, pooler
            h = self.hidden
            return (self.vocab + self.max_positions + 2) * h + 2 * h + h * h + h
        return self.vocab * self.hidden + self.hidden  # + final norm (the LM head is not loaded)

    @property
    def params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params


def _bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


# bytes per token per layer = sum(coefficient x width); see the module docstring for how counted
_DECODER_COEFF = {"fp32": (29.4, 17.5, 17.5, 17.25, 8.7), "half": (18.4, 8.75, 11.0, 10.75, 6.4)}
"""(hidden, intermediate, query width, key/value width, outside the layers per hidden) in bytes."""


def layer_activation_bytes(shape: ModelShape, precision: str, seq_len: int) -> float:
    """Bytes autograd keeps per token for one layer's backward (no checkpointing)."""
    b = _bytes(precision)
    if shape.family == "encoder":  # eager attention keeps heads x seq_len probabilities + dropout mask
        return b * (13 * shape.hidden + 2 * shape.intermediate) + (2 * b + 1) * shape.heads * seq_len
    ch, ci, cq, ckv, _ = _DECODER_COEFF["fp32" if precision == "fp32" else "half"]
    return ch * shape.hidden + ci * shape.intermediate + cq * shape.q_dim + ckv * shape.kv_dim


def activation_bytes(shape: ModelShape, precision: str, tokens: int, seq_len: int, checkpointing: bool) -> float:
    """Peak activation memory of embedding `tokens` tokens (texts of up to `seq_len`) with a graph."""
    per_layer = layer_activation_bytes(shape, precision, seq_len)
    outside = _DECODER_COEFF["fp32" if precision == "fp32" else "half"][4] * shape.hidden
    # The backward pass frees a layer's saved tensors as it makes that layer's gradients, so the
    # peak is what the forward pass saved (tests/train/test_step_memory.py measures it).
    if checkpointing:  # every layer's input, and one layer recomputed at a time
        return tokens * (shape.layers * shape.hidden * _bytes(precision) + per_layer + outside)
    return tokens * (shape.layers * per_layer + outside)


@dataclass(frozen=True)
class TrainShape:
    """One training worker's step, as the run config sets it."""

    rows: int
    """Rows (queries) per rank per micro step."""
    group: int
    query_len: int
    doc_len: int
    precision: str
    """fp32 | bf16 | fp16."""
    zero_stage: int
    """As DeepSpeed runs it (effective_zero_stage)."""
    world: int
    checkpointing: bool
    mini_batch_size: int | None = None
    accumulation: int = 1
    """Micro steps per optimizer step (DeepSpeed's gradient_accumulation_steps)."""

    @property
    def fp32_gradients(self) -> bool:
        """Whether gradients are summed in fp32 (train/ds_config.fp32_accumulation: mixed precision
        with several backward passes per optimizer step, accumulation or GradCache)."""
        return self.precision != "fp32" and (self.accumulation > 1 or self.mini_batch_size is not None)

    def tokens(self, rows: int | None = None) -> int:
        """Padded tokens of `rows` rows (default: the per-rank batch): queries + their passages."""
        r = self.rows if rows is None else rows
        return r * (self.query_len + self.group * self.doc_len)


@dataclass
class MemoryEstimate:
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: float) -> bool:
        return self.total <= FIT_FRACTION * gpu_bytes


def memory_estimate(shape: ModelShape, train: TrainShape) -> MemoryEstimate:
    """Per-GPU bytes of one training worker at its peak (see the module docstring)."""
    p, n, stage = shape.params, train.world, train.zero_stage
    b = _bytes(train.precision)
    mixed = train.precision != "fp32"
    weights = p * b / (n if stage >= 3 else 1)
    if stage >= 3:
        weights += max(shape.embedding_params, 2 * shape.layer_params) * b
    grads = p * (4 if train.fp32_gradients else b) / (n if stage >= 2 else 1)
    optimizer = p * (8 + (4 if mixed else 0)) / (n if stage >= 1 else 1)
    rows = min(train.mini_batch_size or train.rows, train.rows)
    seq = max(train.query_len, train.doc_len)
    acts = activation_bytes(shape, train.precision, train.tokens(rows), seq, train.checkpointing)
    d = shape.hidden
    # cached embeddings (fp32) of the rank's rows and passages, the gathered passages and the logits
    acts += 4 * (train.rows * (1 + train.group) * d + n * train.rows * train.group * d
                 + train.rows * n * train.rows * train.group) * 2
    buckets = 0.0
    if n > 1 or stage > 0:
        buckets = min(DS_REDUCE_BUCKET, p) * b
        if stage >= 3:
            buckets += min(DS_PREFETCH_BUCKET, p) * b
    return MemoryEstimate({"weights": weights, "gradients": grads, "optimizer": optimizer,
                           "activations": acts, "buckets": buckets})


def with_mini_batch(train: TrainShape, mini_batch_size: int | None) -> TrainShape:
    return replace(train, mini_batch_size=mini_batch_size)


def largest_fitting_mini_batch(shape: ModelShape, train: TrainShape, gpu_bytes: float) -> int | None:
    """The largest divisor of the per-rank batch whose GradCache step fits, or None if none does
    (largest: fewer, larger mini-batches keep the GPU busy)."""
    for m in sorted((d for d in range(1, train.rows + 1) if train.rows % d == 0), reverse=True):
        if memory_estimate(shape, with_mini_batch(train, m)).fits(gpu_bytes):
            return m
    return None


def flops_per_token(shape: ModelShape, train: TrainShape) -> float:
    """Training FLOPs per token: 2 P per forward pass (plus attention's 4 x layers x seq x q width),
    three passes' worth for forward + backward, one more forward for checkpointing's recompute and
    one more for GradCache's graph-free first pass."""
    seq = max(train.query_len, train.doc_len)
    forward = 2 * shape.params + 4 * shape.layers * seq * shape.q_dim
    passes = 3 + (1 if train.checkpointing else 0) + (1 if train.mini_batch_size else 0)
    return forward * passes


def default_tokens_per_second(shape: ModelShape, train: TrainShape, gpu: str = DEFAULT_GPU) -> float:
    """Per-GPU tokens/s at DEFAULT_MFU of the GPU's bf16 peak (A100 when unknown)."""
    return DEFAULT_MFU * PEAK_BF16_FLOPS.get(gpu, PEAK_BF16_FLOPS[DEFAULT_GPU]) / flops_per_token(shape, train)


@dataclass(frozen=True)
class NodeType:
    """A cluster.yaml worker node type with the resources Ray will see on it."""

    name: str
    resources: dict[str, float]
    max_workers: int
    gpu: str | None = None
    gpu_memory: float | None = None
    """Bytes of memory per GPU, where the instance type is known."""


@dataclass(frozen=True)
class NodeCount:
    node_type: str
    workers_per_node: int
    nodes: int
    """Nodes to start for every bag's workers at once (0 when a node holds no worker)."""
    within_max: bool


def workers_per_node(per_worker: dict[str, float], node: NodeType) -> int:
    """How many workers asking `per_worker` resources one node of `node` holds."""
    fits = [int(node.resources.get(k, 0) // v + 1e-9) for k, v in per_worker.items() if v > 0]
    return min(fits) if fits else 0


def nodes_for_workers(per_worker: dict[str, float], workers: int, node_types: list[NodeType]) -> list[NodeCount]:
    """Per node type: how many nodes the autoscaler must start to place `workers` workers at once."""
    out = []
    for node in node_types:
        k = workers_per_node(per_worker, node)
        nodes = math.ceil(workers / k) if k else 0
        out.append(NodeCount(node.name, k, nodes, bool(k) and nodes <= node.max_workers))
    return out


def missing_resources(per_worker: dict[str, float], node_types: list[NodeType]) -> list[str]:
    """The resources (CPU, GPU, ...) of one worker that no node type has enough of on its own."""
    return [k for k, v in per_worker.items() if v > 0 and not any(n.resources.get(k, 0) >= v for n in node_types)]


def steps_and_tokens(train: TrainShape, batches_per_epoch: int, rows_per_epoch: int, *, epochs: int,
                     accumulation: int, max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps, padded tokens over all ranks) of one bag; a micro step is one global batch
    (symmetric tasks' are half batches, hence the rows per batch from the plan)."""
    steps = max_steps or epochs * (batches_per_epoch // accumulation)
    rows_per_batch = rows_per_epoch / max(batches_per_epoch, 1)
    tokens = int(steps * accumulation * rows_per_batch * (train.query_len + train.group * train.doc_len))
    return steps, tokens
