"""Float conversions and mapped windows of the merge's safetensors IO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from boom_ray.merge.io import OutTensor, ShardedWriter, TensorReader, from_float32, index_model, to_float32


def _awkward_floats() -> np.ndarray:
    """Every binade from subnormals to the largest finite float32, plus edge cases."""
    gen = np.random.default_rng(0)
    x = np.ldexp(gen.uniform(-1, 1, 1 << 16), gen.integers(-150, 128, 1 << 16)).astype(np.float32)
    edge = [0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, 1.0000001, 65504.0, 65520.0]
    return np.concatenate([x, np.array(edge, dtype=np.float32)])


@pytest.mark.parametrize("dtype, torch_dtype", [("BF16", torch.bfloat16), ("F16", torch.float16)])
def test_rounding_to_half_precision_is_torchs_bit_for_bit(dtype, torch_dtype):
    x = _awkward_floats()
    out = np.empty(x.size, dtype=np.uint16 if dtype == "BF16" else np.float16)
    from_float32(x, dtype, out, np.empty(x.size, dtype=np.uint32))
    ref = torch.from_numpy(x).to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(out.view(np.uint16), ref)
    back = np.empty(x.size, dtype=np.float32)
    to_float32(out, dtype, back)
    assert np.array_equal(back, torch.from_numpy(x).to(torch_dtype).float().numpy())


def test_windows_read_and_pwrite_in_place(tmp_path):
    t = torch.randn(1000, 7).to(torch.bfloat16)
    save_file({"pad": torch.zeros(3), "t": t}, str(tmp_path / "in.safetensors"))
    loc = index_model(str(tmp_path))["t"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    writer = ShardedWriter(str(out_dir), [OutTensor("t", "BF16", (1000, 7))], 10**9)
    with TensorReader() as reader:
        for first in range(0, 7000, 3000):  # windows start mid-page
            count = min(3000, 7000 - first)
            src = reader.map(loc, first, count)
            writer.count("t", writer.pwrite("t", first * 2, src.data))
            src.close()
    writer.close()
    assert torch.equal(load_file(str(out_dir / "model.safetensors"))["t"], t)


def test_closing_a_window_with_a_live_view_keeps_the_view_valid(tmp_path):
    save_file({"t": torch.arange(4096, dtype=torch.float32)}, str(tmp_path / "m.safetensors"))
    loc = index_model(str(tmp_path))["t"]
    with TensorReader() as reader:
        window = reader.map(loc, 0, 4096)
        view = window.data[10:20]
        window.close()  # cannot unmap while `view` lives: pages dropped, mapping kept
        assert view.tolist() == list(range(10, 20))
