"""Peak memory of one real training step on CPU, measured in a fresh process.

    python step_memory.py MODEL_DIR ROWS GROUP LENGTH MINI_BATCH CHECKPOINTING OUT.json

Loads the embedder from MODEL_DIR (a tiny Qwen3: few parameters, so activations dominate),
tokenises ROWS queries and ROWS x GROUP passages of LENGTH tokens each (no padding, so the batch's
size is exactly what the plan assumes), then runs one step as the training loop does (forward,
InfoNCE, backward, AdamW step), with GradCache when MINI_BATCH > 0. Writes the resident memory
before the step and the process's peak (VmHWM) after it: their difference is the step's peak,
what boom_ray.plan.estimate.memory_estimate predicts minus the weights already loaded. The process peak
before the step is recorded too, so a caller can tell that the step, not the set-up, set it.
So that RSS counts only what the step allocates, as torch.cuda.max_memory_allocated does on a
GPU: glibc returns freed memory (faithful_malloc, release_free_heap), and an unmeasured step runs
first, so the measured one maps no new library code (reset_peak then restarts VmHWM). Used by
tests/train/test_step_memory.py; benchmarks/plan_gpu_check.py borrows its texts.
"""

from __future__ import annotations

import gc
import json
import resource
import sys


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_bytes() -> int:
    """This process's peak RSS since its exec (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    parent's peak across fork and exec, so under a big pytest process it would be the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def faithful_malloc() -> None:
    """Make RSS follow live allocations. glibc raises its mmap threshold after each large free, so
    later tensors of that size come from the heap, and freed heap pages stay resident: a step
    then reuses what the set-up left free and its RSS growth understates what it allocates, by
    an amount that depends on the machine's kernels. A fixed threshold (large blocks always
    mmapped, returned on free) and trimming to zero keep the measure to what is live."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 0)


def release_free_heap() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: 5 written to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def texts(n: int, length: int, salt: str) -> list[str]:
    """n distinct texts of at least `length` tokens (cut to `length` by the tokenizer)."""
    words = "alpha beta gamma delta river stone light cloud music paper garden window".split()
    return [" ".join(f"{words[(i * 7 + j) % len(words)]}{salt}{(i + j) % 97}" for j in range(length))
            for i in range(n)]


def main(model_dir: str, rows: int, group: int, length: int, mini: int, checkpointing: bool, out: str) -> None:
    faithful_malloc()
    import torch

    from boom_ray.config import ModelConfig
    from boom_ray.model.embedder import Embedder
    from boom_ray.losses.info_nce import info_nce_loss
    from boom_ray.train.grad_cache import cached_backward, plain_backward

    torch.set_num_threads(1)
    torch.manual_seed(0)
    embedder = Embedder.from_pretrained(model_dir, ModelConfig(pooling="last", max_query_length=length,
                                                               max_doc_length=length), dtype=torch.float32)
    if checkpointing:
        embedder.gradient_checkpointing_enable()
    embedder.train()
    q = embedder.tokenize(texts(rows, length, "q"), length)
    p = embedder.tokenize(texts(rows * group, length, "p"), length)
    assert q["input_ids"].shape[1] == length and int(p["attention_mask"].sum()) == rows * group * length
    trainable = [t for t in embedder.parameters() if t.requires_grad]

    def loss_fn(qe, pe):
        return info_nce_loss(qe, pe, 0.05)

    def step(optimizer) -> None:
        if mini:
            cached_backward(embedder, q, p, loss_fn, mini, plain_backward)
        else:
            loss_fn(embedder(q), embedder(p)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # A first, unmeasured step maps the code the step runs: RSS counts the shared libraries' pages
    # too, and how many a first call maps depends on the page cache (a fresh install has all of
    # libtorch cached and measured 13 MiB more here). The measured step then allocates only data;
    # a fresh optimizer allocates its states again inside it.
    step(torch.optim.AdamW(trainable, lr=1e-4))
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    gc.collect()
    release_free_heap()
    reset_peak()
    before, peak_before = rss_bytes(), peak_bytes()
    step(optimizer)
    peak = peak_bytes()
    with open(out, "w") as f:
        json.dump({"rss_before": before, "peak_before": peak_before, "peak": peak, "step_peak": peak - before,
                   "params": sum(t.numel() for t in embedder.parameters())}, f)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5] == "1", a[6])
