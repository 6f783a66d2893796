"""GradCache: the contrastive loss of a large batch in the memory of one mini-batch.

Why: InfoNCE wants big batches (every other row's passages are negatives), but a training step
that keeps the graph of the whole batch holds every layer's activations for all of its texts;
at the reference scale (32 queries + 256 passages of 512 tokens per GPU through Qwen3-4B) that
alone is tens of GB. The loss, though, depends on the model only through the embeddings, which
are small. So (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"; sentence-transformers' CachedMultipleNegativesRankingLoss):

1. embed the batch mini-batch by mini-batch without a graph, keeping only the embeddings;
2. compute the loss on those cached embeddings exactly as the plain path does (in-batch and
   cross-device negatives, own-group-only rows; :func:`boom_ray.losses.info_nce.info_nce_loss`) and
   back-propagate it to the embeddings only;
3. embed each mini-batch again, this time with a graph, and back-propagate the surrogate
   ``sum(embedding * cached gradient)``, whose gradient with respect to the parameters is that
   mini-batch's share of the loss's. The shares add up to the full-batch gradient.

The second forward pass replays the RNG state the first one started from, so dropout draws the
same masks in both passes and the gradient is that of the loss that was computed.

Costs: one extra forward pass (about a third more compute than forward + backward) for a peak
of one mini-batch's activations instead of the whole batch's.

With DeepSpeed every surrogate goes through ``engine.backward`` (loss scaling, 1/accumulation
scaling, ZeRO's gradient hooks); all but the last are marked as off the gradient-accumulation
boundary, so the gradient all-reduce of ZeRO 0/1 runs once per micro step as it does without
mini-batches (ZeRO 2/3 reduce-scatter as gradients arrive, as under gradient accumulation).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor

Features = dict[str, Tensor]
Backward = Callable[[Tensor, bool], None]
"""backward(surrogate, last): back-propagate one mini-batch's surrogate; `last` marks the final one."""


class RngState:
    """The CPU and current-CUDA-device RNG states at one moment, to replay a forward pass.

    The CUDA state is taken from the current device (where the model runs), not from the
    features' devices: the features are still on the CPU when the model is called."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda: dict[int, Tensor] = {}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            device = torch.cuda.current_device()
            self.cuda[device] = torch.cuda.get_rng_state(device)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; the global RNG continues afterwards as if it had not run."""
        with torch.random.fork_rng(devices=list(self.cuda)):
            torch.set_rng_state(self.cpu)
            for device, state in self.cuda.items():
                torch.cuda.set_rng_state(state, device)
            yield


def split_rows(features: Features, sizes: list[int]) -> list[Features]:
    """Cut padded features along the batch dimension into consecutive pieces of `sizes` rows.

    The pieces keep the batch's padded length, so each text is embedded exactly as in the full
    batch (left-padded rows keep their positions)."""
    pieces = {k: torch.split(v, sizes) for k, v in features.items()}
    return [{k: pieces[k][i] for k in features} for i in range(len(sizes))]


def chunk_sizes(rows: int, mini_batch_size: int) -> list[int]:
    """Rows per mini-batch: `mini_batch_size` each, the last one smaller when it does not divide
    (symmetric tasks use half batches)."""
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
    full, rest = divmod(rows, mini_batch_size)
    return [mini_batch_size] * full + ([rest] if rest else [])


def cached_backward(forward: Callable[[Features], Tensor], query_features: Features, passage_features: Features,
                    loss_fn: Callable[[Tensor, Tensor], Tensor], mini_batch_size: int, backward: Backward) -> Tensor:
    """Loss of the whole batch, with the parameters' gradients of it accumulated by `backward`.

    forward: features -> embeddings (the embedder, or a DeepSpeed engine wrapping it).
    query_features: [B, ...]; passage_features: [B*G, ...], row i's group at rows i*G..(i+1)*G.
    loss_fn(q, p): the loss of all B rows (a collective when it gathers across ranks: every rank
    calls it once per step, as in the plain path). mini_batch_size: rows (a query and its G
    passages) per mini-batch. Returns the loss, detached."""
    rows = next(iter(query_features.values())).shape[0]
    group = next(iter(passage_features.values())).shape[0] // rows
    sizes = chunk_sizes(rows, mini_batch_size)
    q_chunks = split_rows(query_features, sizes)
    p_chunks = split_rows(passage_features, [n * group for n in sizes])

    states: list[tuple[RngState, RngState]] = []
    q_cache, p_cache = [], []
    with torch.no_grad():
        for qf, pf in zip(q_chunks, p_chunks):
            q_state = RngState()
            q_cache.append(forward(qf))
            p_state = RngState()
            p_cache.append(forward(pf))
            states.append((q_state, p_state))

    q = torch.cat(q_cache).requires_grad_(True)
    p = torch.cat(p_cache).requires_grad_(True)
    loss = loss_fn(q, p)
    loss.backward()  # to the cached embeddings only: they are leaves
    q_grads = torch.split(q.grad, sizes)
    p_grads = torch.split(p.grad, [n * group for n in sizes])
    del q_cache, p_cache, q, p

    for i, ((q_state, p_state), qf, pf) in enumerate(zip(states, q_chunks, p_chunks)):
        with q_state.replay():
            surrogate = (forward(qf) * q_grads[i]).sum()
        with p_state.replay():
            surrogate = surrogate + (forward(pf) * p_grads[i]).sum()
        backward(surrogate, i == len(sizes) - 1)
    return loss.detach()


def deepspeed_backward(engine) -> Backward:
    """engine.backward for each mini-batch of one micro step, with DeepSpeed's accumulation
    boundary (gradient all-reduce, and what engine.step() then does) only on the last one.

    The boundary the micro step has without mini-batches is read from the engine's micro-step
    counter; it is set explicitly on the last mini-batch, so engine.step() sees it too."""
    natural = (engine.micro_steps + 1) % engine.gradient_accumulation_steps() == 0

    def backward(surrogate: Tensor, last: bool) -> None:
        engine.set_gradient_accumulation_boundary(natural and last)
        engine.backward(surrogate)

    return backward


def plain_backward(surrogate: Tensor, last: bool) -> None:
    """Backward without DeepSpeed (plain PyTorch loops, tests): gradients accumulate in .grad."""
    surrogate.backward()
