"""The add-on's float TIFF writer and reader (plain Python, no bpy): what the backend reads back is
exactly Blender's float buffer, and float files are told from 16-bit ones."""

from __future__ import annotations

import array
import io

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_addon.pixels import float_tiff


def rgba_buffer(values: np.ndarray) -> array.array:
    """(H, W, 4) rows top to bottom -> Blender's flat RGBA buffer, rows bottom to top."""
    return array.array("f", np.ascontiguousarray(values[::-1], np.float32).tobytes())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), h=st.integers(1, 17), w=st.integers(1, 17), channels=st.sampled_from([1, 3, 4]))
def test_written_float_tiffs_hold_the_buffers_values_exactly(tmp_path_factory, seed, h, w, channels):
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1e3, 1e3, (h, w, 4)).astype(np.float32)
    path = float_tiff.write(tmp_path_factory.mktemp("t") / "m.tif", rgba_buffer(values), w, h, channels)
    back = tifffile.imread(path)
    assert back.dtype == np.float32
    assert np.array_equal(back.reshape(h, w, channels), values[..., :channels])
    with open(path, "rb") as f:
        assert float_tiff.holds_float(f)


def test_channels_are_what_the_buffer_really_holds():
    grey = np.repeat(np.linspace(-0.3, 2.5, 12, dtype=np.float32).reshape(3, 4, 1), 4, axis=2)
    grey[..., 3] = 1.0
    assert float_tiff.channels_of(rgba_buffer(grey)) == 1
    colour = grey.copy()
    colour[1, 2, 0] += 0.5
    assert float_tiff.channels_of(rgba_buffer(colour)) == 3
    colour[0, 0, 3] = 0.5
    assert float_tiff.channels_of(rgba_buffer(colour)) == 4


@pytest.mark.parametrize("dtype, byteorder, floating", [
    (np.float32, "<", True), (np.float32, ">", True), (np.float16, "<", True), (np.float64, ">", True),
    (np.uint16, "<", False), (np.uint8, ">", False)])
@pytest.mark.parametrize("channels", [1, 3])
def test_float_tiffs_are_told_from_integer_ones(tmp_path, dtype, byteorder, floating, channels):
    shape = (5, 6, channels) if channels > 1 else (5, 6)
    tifffile.imwrite(tmp_path / "m.tif", np.zeros(shape, dtype), byteorder=byteorder)
    with open(tmp_path / "m.tif", "rb") as f:
        assert float_tiff.holds_float(f) is floating


def test_anything_else_is_not_a_float_tiff():
    png = b"\x89PNG\r\n\x1a\n" + bytes(40)
    truncated = b"II*\x00" + (8).to_bytes(4, "little") + (3).to_bytes(2, "little") + bytes(5)
    for data in (png, truncated, b""):
        assert not float_tiff.holds_float(io.BytesIO(data))
