"""The add-on's size rules (no bpy): the W×H a Generate asks for, the downsample on export of a
source larger than the backend reads (pixels/sizing.py, pixels/resample.py) and its 8-bit TIFF."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from blender_addon import parameters
from blender_addon.pixels import float_tiff, resample, sizing


def test_the_limits_are_the_backends_declared_ones():
    from backend import images
    from backend.params import MAX_SIZE, MIN_SIZE, SIZE_MULTIPLE

    assert (sizing.LOW, sizing.MAX_SIZE, sizing.INPUT_MAX) == (MIN_SIZE, MAX_SIZE, images.MAX_SIDE)
    assert sizing.SOURCE_MAX == images.MAX_SOURCE_SIDE
    assert parameters.sizes()["multiple"] == SIZE_MULTIPLE
    assert sizing.multiple("auto") == SIZE_MULTIPLE["diffusion"]  # auto may run the diffusion engine


@given(st.integers(1, 40000), st.integers(1, 40000))
def test_the_backend_reads_a_huge_file_at_the_size_the_add_on_asks_for(w, h):
    from backend import images

    if sizing.backend_reduces(w, h):  # the add-on hands over the file: both sides must agree on the size
        factor = images.reduce_factor(w, h)
        assert factor == sizing.export_factor(w, h) and sizing.export_size(w, h) in (None, (w // factor, h // factor))
    else:
        assert max(w, h) > images.MAX_SOURCE_SIDE


@given(st.integers(1, 30000), st.integers(1, 30000), st.sampled_from(["patch", "diffusion", "auto"]))
def test_match_source_asks_for_the_sources_own_size_in_what_the_engine_takes(w, h, engine):
    plan = sizing.plan(w, h, sizing.MATCH, engine=engine)
    step = sizing.multiple(engine)
    assert plan.width % step == 0 and plan.height % step == 0 and plan.size == [plan.width, plan.height]
    assert sizing.LOW <= min(plan.width, plan.height) and max(plan.width, plan.height) <= sizing.MAX_SIZE
    if max(w, h) > sizing.INPUT_MAX:  # downsampled on export by a whole factor, said first
        factor = -(-max(w, h) // sizing.INPUT_MAX)
        assert plan.export == (w // factor, h // factor) and plan.notes[0].startswith("Downsampled to")
        if min(plan.export) >= sizing.LOW and all(s % step == 0 for s in plan.export):
            assert (plan.width, plan.height) == plan.export  # asked for at the exported size: no second resample
    else:
        assert plan.export is None
        assert (abs(plan.width - w) < step and abs(plan.height - h) < step) or min(w, h) < sizing.LOW
    if (plan.width, plan.height) != (w, h):
        assert plan.notes  # never silent


def test_a_1024_by_384_source_is_made_at_1024_by_384_and_fixed_is_a_square():
    for engine in ("patch", "diffusion"):
        assert sizing.plan(1024, 384, sizing.MATCH, engine=engine) == sizing.SizePlan(1024, 384, (), None)
    assert sizing.plan(1000, 380, sizing.MATCH, engine="patch").size == [1000, 380]
    rounded = sizing.plan(1000, 380, sizing.MATCH, engine="diffusion")
    assert rounded.size == [1000, 384] and "multiples of 8" in rounded.notes[0]
    fixed = sizing.plan(1024, 384, sizing.FIXED, 512)
    assert fixed.size == [512, 512] and "aspect differs" in fixed.notes[0]
    assert sizing.plan(20000, 5000, sizing.FIXED, 512).export == (6666, 1666)


def test_a_16k_source_is_said_to_be_downsampled_before_anything_is_made():
    plan = sizing.plan(16384, 16384, sizing.MATCH, engine="patch")
    assert plan.size == [8192, 8192] and plan.export == (8192, 8192)
    assert plan.notes == ("Downsampled to 8192×8192: the 16384×16384 source is over the backend's "
                          "8192 px a side",)
    halved = ("Downsampled to 8192×4096: the 16384×8192 source is over the backend's 8192 px a side",)
    assert sizing.own_size(16384, 8192) == sizing.SizePlan(8192, 4096, halved, (8192, 4096))
    assert sizing.own_size(8192, 100) == sizing.SizePlan(8192, 100)


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 5), st.integers(0, 5),
       st.integers(0, 2**16))
def test_the_block_mean_is_each_blocks_mean_and_commutes_with_whole_block_rolls(factor, bw, bh, rx, ry, seed):
    width, height = bw * factor + rx % factor, bh * factor + ry % factor  # a remainder that is left out
    pixels = np.random.default_rng(seed).random((height, width, 4), dtype=np.float32)
    small, new_width, new_height = resample.block_mean(pixels.reshape(-1), width, height, factor)
    assert (new_width, new_height) == (bw, bh)
    cut = pixels[:bh * factor, :bw * factor].reshape(bh, factor, bw, factor, 4)
    np.testing.assert_allclose(small.reshape(bh, bw, 4), cut.mean(axis=(1, 3)), atol=2e-6)
    tile = pixels[:bh * factor, :bw * factor]  # a periodic image's blocks roll with it
    rolled = np.roll(tile, (ry * factor, rx * factor), axis=(0, 1))
    rolled_small = resample.block_mean(rolled.reshape(-1), bw * factor, bh * factor, factor)[0]
    np.testing.assert_allclose(rolled_small.reshape(bh, bw, 4), np.roll(small.reshape(bh, bw, 4), (ry, rx), (0, 1)),
                               atol=2e-6)


def test_the_block_mean_refuses_a_factor_it_cannot_use():
    with pytest.raises(ValueError, match="factor"):
        resample.block_mean(np.zeros(4 * 4 * 4, np.float32), 4, 4, 5)


@pytest.mark.parametrize("channels", [3, 4])
def test_an_8_bit_tiff_holds_the_bytes_top_row_first(tmp_path, channels):
    rng = np.random.default_rng(channels)
    data = rng.integers(0, 256, (5, 7, 4)).astype(np.uint8)
    blender = (data[::-1].astype(np.float32) / 255.0).reshape(-1)  # Blender's rows run bottom to top
    path = float_tiff.write(tmp_path / "a.tif", blender, 7, 5, channels, bits=8)
    with Image.open(path) as image:
        assert image.mode == ("RGBA" if channels == 4 else "RGB")
        np.testing.assert_array_equal(np.asarray(image), data[:, :, :channels])
    with open(path, "rb") as f:
        assert not float_tiff.holds_float(f)


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**16))
def test_the_byte_block_mean_is_the_float_one_rounded_and_writes_the_same_tiff(factor, bw, bh, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (bh * factor, bw * factor, 4)).astype(np.float32) / 255
    means = resample.block_mean(pixels.reshape(-1), bw * factor, bh * factor, factor)[0]
    as_bytes = resample.block_mean(pixels.reshape(-1), bw * factor, bh * factor, factor, to_bytes=True)[0]
    rgb = resample.block_mean(pixels.reshape(-1), bw * factor, bh * factor, factor, to_bytes=True, channels=3)[0]
    assert as_bytes.dtype == np.uint8 and np.array_equal(rgb, as_bytes.reshape(-1, 4)[:, :3].reshape(-1))
    assert float_tiff._samples(rgb, bw, bh, 3, 8) == float_tiff._samples(as_bytes, bw, bh, 3, 8)
    assert np.abs(as_bytes.astype(np.float64) - means * 255.0).max() <= 0.5 + 1e-3
    written = [np.frombuffer(float_tiff._samples(m, bw, bh, 3, 8), np.uint8).astype(int) for m in (as_bytes, means)]
    assert np.abs(written[0] - written[1]).max() <= 1  # the same bytes but for a rounding at exactly .5
