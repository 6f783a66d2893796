"""The one merge driver (merge/driver.py) behind the three merges: the streaming merge, the
in-memory sweep merge and `merge_tensors` agree bit for bit on the same inputs, and the driver
reads a source once per statistics pass plus once for the combine (what bounds memory on disk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boom_ray.merge.blocks import Workers
from boom_ray.merge.driver import ArrayOutput, Arrays, gather_statistics, merge_tensor
from boom_ray.merge.in_memory import load_model_tensors, merge_in_memory
from boom_ray.merge.methods import get_method, merge_tensors
from boom_ray.merge.task import merge

from .conftest import load_dir
from .test_executor import BIG, CASES, n_inputs, request


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_three_merges_agree_bit_for_bit(models, tmp_path, case):
    """Every tensor of the tiny models fits one block of each merge, so even the statistics are
    summed alike: the written model, the in-memory merge and the whole-tensor reference are equal."""
    req = request(models, case)
    merge(req, str(tmp_path / "out"), BIG, progress=False)
    written = load_dir(tmp_path / "out")

    method = get_method(req.method)
    settings = method.validate(len(req.models), req.base_model is not None, req.parameters,
                               [m.parameters for m in req.models])
    tensors = [load_model_tensors(m.path) for m in req.models]
    base = load_model_tensors(req.base_model) if req.base_model else None
    in_memory = merge_in_memory(method, settings, tensors, base, threads=2)

    inputs = [load_dir(m) for m in models]
    params, with_base, per_model = CASES[case]
    n = n_inputs(case)
    assert set(written) == set(in_memory)
    for name, got in written.items():
        reference = merge_tensors(req.method, [m[name] for m in inputs[:n]], [0.2, 0.6, 1.0][:n],
                                  inputs[3][name] if with_base else None, params, [per_model] * n, tensor_name=name)
        assert torch.equal(got, torch.from_numpy(in_memory[name])), f"streamed vs in memory: {name}"
        assert torch.equal(got, torch.from_numpy(reference)), f"streamed vs merge_tensors: {name}"


class CountingSource:
    """A source of in-memory rows cut into windows of `chunk` elements, counting passes over it."""

    def __init__(self, rows: list[np.ndarray], n: int, chunk: int) -> None:
        self.rows, self.n, self.chunk = rows, n, chunk
        self.dtype, self.numel, self.passes = "F32", rows[0].size, 0

    def windows(self):
        self.passes += 1
        for first in range(0, self.numel, self.chunk):
            yield first, [r[first:first + self.chunk] for r in self.rows]


def _ties_state(method, rows):
    settings = method.validate(2, True, {}, [{"weight": 0.4, "density": 0.3}, {"weight": 0.9, "density": 0.6}])
    return method.new_state(method.resolve(settings, "w", 0.0), rows[0].size, (rows[0].size,), "w")


def test_one_read_per_pass_and_one_for_the_combine_whatever_the_windows():
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]  # two models and a base
    method = get_method("ties")
    results, totals = [], []
    for chunk in (5000, 1536, 700):
        state = _ties_state(method, rows)
        passes = state.passes
        source, out = CountingSource(rows, 2, chunk), np.empty(5000, np.float32)
        totals.append(merge_tensor(method, state, source, ArrayOutput(out, "F32"), Workers(None, 1, 3), block=256))
        assert passes == 2 and source.passes == passes + 1
        results.append(out)
    # the combine is elementwise and the radix select's histograms are integers: neither depends on the windows
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert all(np.array_equal(a, b) for t in totals[1:] for a, b in zip(totals[0], t))

    state = _ties_state(method, rows)  # statistics given: no statistics pass, one read for the combine
    source, out = CountingSource(rows, 2, 1536), np.empty(5000, np.float32)
    merge_tensor(method, state, source, ArrayOutput(out, "F32"), Workers(None, 1, 3), 256, statistics=totals[0])
    assert source.passes == 1 and np.array_equal(out, results[0])


def test_an_empty_tensor_reads_nothing():
    method = get_method("multislerp")
    settings = method.validate(2, False, {}, [{"weight": 1.0}, {"weight": 2.0}])
    state = method.new_state(method.resolve(settings, "e", 0.0), 0, (0,), "e")
    rows = [np.empty(0, np.float32)] * 2
    assert gather_statistics(method, state, Arrays(rows, "F32", 2), Workers(None, 1, 2), 256) == []
    assert merge_tensors("multislerp", [np.empty((0, 3))] * 2, [1.0, 2.0]).shape == (0, 3)
