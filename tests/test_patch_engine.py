"""The weight-free patch engine: quality targets on real textures, tiling, modes, seeds, balance."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from backend import engines, generate_variants
from backend.errors import CancelledError, InputError
from backend.images import load_reference
from backend.metrics import copy_score, texture_metrics
from backend.params import GenerationParams
from backend.patch import engine as patch
from backend.patch import lattice
from tests.conftest import ROOT


def texture(name: str, size: int | None = None) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)())
    return image if size is None else image.resize((size, size), Image.Resampling.LANCZOS)


def step_ratios(image: Image.Image, axis: int) -> np.ndarray:
    """Mean step between every pair of neighbouring columns (axis=1) or rows (axis=0), the
    wrap-around pair included, over their median: a seam anywhere stands out here."""
    a = np.asarray(image.convert("L"), np.float32)
    steps = np.abs(a - np.roll(a, 1, axis=axis)).mean(axis=1 - axis)
    return steps / np.median(steps)


# ---------------------------------------------------------------- the quality targets


@pytest.mark.parametrize("name", ["brick", "grass", "gravel", "immunohistochemistry"])
def test_quality_targets_on_real_512px_textures(name):
    reference = texture(name)  # 512 x 512; the last one is colour
    assert reference.size == (512, 512)
    (image,) = generate_variants(reference, engine="patch", seed=1234, size=512)
    assert image.size == (512, 512) and image.mode == reference.mode
    m = texture_metrics(image, reference)
    assert m["seam_x"] <= 1.2 and m["seam_y"] <= 1.2, m
    assert m["appearance"] <= 1.3, m
    assert m["copy"] <= 0.7, m
    assert m["structure"] <= STRUCTURE_BOUND.get(name, 1.5) and m["proportion"] <= PROPORTION_BOUND.get(name, 0.15), m


# Calibrated in docs/PATCH_ENGINE.md ("Calibration"): bounds over the worst variant of 16 seeds.
# The tissue is non-stationary: a rolled copy of it already scores 1.7 on structure.
STRUCTURE_BOUND = {"immunohistochemistry": 2.5}  # 1.5 for the others (brick: the target)
PROPORTION_BOUND = {"immunohistochemistry": 0.28}  # 0.15 for the others


def tinted_gravel(size: int) -> Image.Image:
    """The stationary colour texture: gravel tinted brown, as tests/conftest.py does."""
    gray = np.asarray(texture("gravel", size), np.float32) / 255.0
    return Image.fromarray((np.stack([gray * 0.9 + 0.1, gray * 0.7, gray * 0.5], axis=-1) * 255).astype(np.uint8))


# The default run holds the regular (brick) and the colour texture to every one of 16 seeds; the
# other three, each also checked at 512 px above, over 16 seeds with `-m slow` (a minute each).
@pytest.mark.parametrize("name", ["brick", pytest.param("grass", marks=pytest.mark.slow),
                                  pytest.param("gravel", marks=pytest.mark.slow),
                                  pytest.param("immunohistochemistry", marks=pytest.mark.slow), "gravel_colour"])
def test_every_variant_of_16_seeds_meets_the_targets(name):
    reference = tinted_gravel(256) if name == "gravel_colour" else texture(name, 256)
    images = generate_variants(reference, engine="patch", seed=100, size=256, variants=16)
    worst = {k: max(texture_metrics(image, reference)[k] for image in images)
             for k in ("seam_x", "seam_y", "appearance", "copy", "structure", "proportion")}
    assert worst["seam_x"] <= 1.2 and worst["seam_y"] <= 1.2, worst
    assert worst["appearance"] <= 1.3 and worst["copy"] <= 0.7, worst
    assert worst["structure"] <= STRUCTURE_BOUND.get(name, 1.5), worst
    assert worst["proportion"] <= PROPORTION_BOUND.get(name, 0.15), worst


# --------------------------------------------------------------- structure: near-regular textures


def test_brick_is_detected_as_regular_and_holds_whole_periods():
    (image,) = generate_variants(texture("brick"), engine="patch", seed=2, size=512)
    record = json.loads(image.info["parameters"])
    assert record["patch_structure"] == "regular" and "joints" in record["patch_expect"]
    period_y, period_x = record["patch_period"]
    assert period_y is None and 30 < period_x < 42  # the brick columns; no period down the wall
    assert abs(512 / period_x - round(512 / period_x)) < 1e-3  # whole columns (period rounded to 0.01 px)
    assert abs(record["patch_rescale"][1] - 1) < 0.1
    # The output's own lattice is that regular one, straight: its period is found again, and
    # every column of bricks lies at the same phase from top to bottom.
    found = lattice.detect(np.asarray(image, np.float32))
    assert found.period_x == pytest.approx(period_x, abs=1.0)
    phase = lattice.phase(np.asarray(image, np.float32), period_x, axis=1)
    drift = np.angle(np.exp(2j * np.pi * (phase[:, 256] - phase[256, 256])))
    assert np.percentile(np.abs(drift), 90) < 0.25 * np.pi


@pytest.mark.parametrize("name", ["grass", "gravel", "immunohistochemistry"])
def test_irregular_textures_keep_the_stochastic_path(name):
    (image,) = generate_variants(texture(name, 256), engine="patch", seed=0, size=256)
    record = json.loads(image.info["parameters"])
    assert record["patch_structure"] == "stochastic" and "patch_period" not in record


def test_the_structure_option_overrides_the_detection():
    brick = texture("brick", 256)
    (forced,) = generate_variants(brick, engine="patch", seed=0, size=256, structure="stochastic")
    assert json.loads(forced.info["parameters"])["patch_structure"] == "stochastic"
    with pytest.raises(InputError, match="no lattice"):
        generate_variants(texture("gravel", 256), engine="patch", seed=0, size=256, structure="regular")
    with pytest.raises(InputError, match="structure"):
        generate_variants(brick, engine="patch", seed=0, size=256, structure="bricks")


# ------------------------------------------------------------- the source coordinate map


@pytest.mark.parametrize("name", ["brick", "immunohistochemistry"])
@pytest.mark.parametrize("tile", ["both", "x"])
def test_the_source_map_gives_every_pixel_exactly(name, tile):
    reference = load_reference(texture(name, 192))
    params = GenerationParams(engine="patch", seed=4, size=192, variants=2, tile=tile).validated()
    variants = patch.synthesize(reference, params)
    for variant in variants:
        h, w = variant.exemplar.shape[:2]
        assert variant.coords.shape == (192, 192, 2)
        assert variant.coords[..., 0].max() < h and variant.coords[..., 1].max() < w
        copied = variant.exemplar[variant.coords[..., 0], variant.coords[..., 1]]
        np.testing.assert_array_equal(np.asarray(variant.image).reshape(copied.shape), copied)
    # The exemplar is the reference at the output's scale, before any rectification.
    np.testing.assert_array_equal(variants[0].exemplar, patch.exemplar_from(reference, 192))


# ------------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize("name", ["gravel", "grass"])
def test_no_seam_anywhere_when_tiled(name):
    # Stronger than the seam score: no column or row, the wrap-around one included, steps more
    # than the exemplar's own columns do (theirs reach about 1.3 x the median).
    (image,) = generate_variants(texture(name, 256), engine="patch", seed=5, size=256, tile="both")
    assert step_ratios(image, 1).max() < 1.5 and step_ratios(image, 0).max() < 1.5


def test_tile_axes_are_honoured():
    reference = texture("gravel", 256)
    (none,) = generate_variants(reference, engine="patch", seed=5, size=256, tile="none")
    (x_only,) = generate_variants(reference, engine="patch", seed=5, size=256, tile="x")
    (y_only,) = generate_variants(reference, engine="patch", seed=5, size=256, tile="y")
    # Not closed: the file's border is a real seam.
    assert step_ratios(none, 1)[0] > 1.6 and step_ratios(none, 0)[0] > 1.6
    assert step_ratios(x_only, 1).max() < 1.5 and step_ratios(x_only, 0)[0] > 1.6
    assert step_ratios(y_only, 0).max() < 1.5 and step_ratios(y_only, 1)[0] > 1.6


# ------------------------------------------------------------------------- modes and alpha


def test_grayscale_stays_grayscale_and_colour_stays_colour(brick_path, color_texture_path):
    (gray,) = generate_variants(brick_path, engine="patch", seed=0, size=128)
    (colour,) = generate_variants(color_texture_path, engine="patch", seed=0, size=128)
    assert gray.mode == "L" and colour.mode == "RGB"
    # Pixels are copied, never invented: every output colour occurs in the (same-scale) reference.
    reference = {tuple(p) for p in np.asarray(Image.open(color_texture_path).convert("RGB")).reshape(-1, 3)}
    assert {tuple(p) for p in np.asarray(colour).reshape(-1, 3)} <= reference


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_carried_with_the_colour(mode):
    gray = np.asarray(texture("gravel", 128))
    alpha = np.where(gray > 128, 255, 40).astype(np.uint8)  # a cut-out that follows the stones
    if mode == "RGBA":
        pixels = np.dstack([gray, 255 - gray, gray // 2, alpha])
    else:
        pixels = np.dstack([gray, alpha])
    (image,) = generate_variants(Image.fromarray(pixels, mode), engine="patch", seed=3, size=128)
    assert image.mode == mode
    out = np.asarray(image)
    # Alpha travelled with its pixel: the same rule still links them everywhere.
    np.testing.assert_array_equal(out[..., -1], np.where(out[..., 0] > 128, 255, 40))
    assert 0.2 < (out[..., -1] == 255).mean() < 0.8


# ------------------------------------------------------------------- seeds and variants


def test_seeds_reproduce_and_variants_differ():
    reference = texture("grass", 128)
    first = generate_variants(reference, engine="patch", seed=7, size=128, variants=2)
    again = generate_variants(reference, engine="patch", seed=7, size=128, variants=2)
    alone = generate_variants(reference, engine="patch", seed=8, size=128)[0]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(first[1]), np.asarray(alone))  # variant i = seed + i
    assert np.abs(np.asarray(first[0], np.int16) - np.asarray(first[1], np.int16)).mean() > 10
    record = json.loads(first[1].info["parameters"])
    assert record["engine"] == "patch" and record["seed"] == 8 and record["steps"] is None


def test_balance_moves_the_structure():
    reference = texture("gravel", 256)
    strides = [patch.block_size(b, 512)[0] for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert strides == sorted(strides) and strides[0] < strides[-1]

    def mean_copy(balance):
        images = generate_variants(reference, engine="patch", seed=11, size=256, balance=balance, variants=2)
        return np.mean([copy_score(image, reference) for image in images])

    # Bigger pieces of the reference survive at balance 1 than at 0.
    assert mean_copy(0.0) < mean_copy(0.5) < mean_copy(1.0)


# ------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("shape", [(32, 32), (48, 200), (1500, 90), (4096, 4096)])
def test_reference_sizes_from_32_to_4096_work(shape):
    h, w = shape
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    reference = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    (image,) = generate_variants(reference, engine="patch", seed=0, size=64)
    assert image.size == (64, 64) and image.mode == "RGB"


def test_too_small_a_reference_gets_a_clear_message():
    with pytest.raises(InputError) as info:
        generate_variants(Image.new("RGB", (16, 40)), engine="patch", seed=0, size=64)
    assert "too small" in info.value.message and "32" in info.value.hint


# -------------------------------------------------------------------- progress and cancel


def test_progress_is_reported_and_cancel_stops(brick_path):
    steps = []
    generate_variants(brick_path, engine="patch", seed=0, size=128, variants=2,
                      on_step=lambda step, total, preview: steps.append((step, total)))
    assert steps and steps[-1][0] == steps[-1][1] and [s for s, _ in steps] == sorted(s for s, _ in steps)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        generate_variants(brick_path, engine="patch", seed=0, size=128, cancel=cancel)


# -------------------------------------------------------------------- engine selection


def test_auto_uses_patch_when_the_diffusion_models_are_missing(tmp_path, brick_path):
    assert patch.available() == (True, "weight-free: needs no models")
    name, why = engines.resolve("auto", str(tmp_path / "no-model"), str(tmp_path / "no-adapter"))
    assert name == "patch" and "patch" in why
    (image,) = generate_variants(brick_path, engine="auto", base=str(tmp_path / "no-model"),
                                 ip_adapter=str(tmp_path / "no-adapter"), seed=0, size=64)
    assert json.loads(image.info["parameters"])["engine"] == "patch"


def test_cli_generate_with_the_patch_engine(tmp_path, brick_path):
    result = subprocess.run(
        [sys.executable, "-m", "backend", "generate", str(brick_path), "--engine", "patch", "--out",
         str(tmp_path), "--seed", "3", "--size", "64", "--variants", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = result.stdout.split()
    assert [p.rsplit("/", 1)[1] for p in written] == [
        "brick-patch-s3.png", "brick-patch-s3-tiled3x3.png", "brick-patch-s4.png", "brick-patch-s4-tiled3x3.png"]
    with Image.open(written[0]) as image:
        assert image.mode == "L" and json.loads(image.text["parameters"])["engine"] == "patch"


# ------------------------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(32, 300), height=st.integers(32, 300), mode=st.sampled_from(["L", "LA", "RGB", "RGBA"]),
    balance=st.floats(0.0, 1.0), tile=st.sampled_from(["both", "x", "y", "none"]), seed=st.integers(0, 2**31),
)
def test_any_input_gives_a_square_output_of_copied_pixels(width, height, mode, balance, tile, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, len(mode)), dtype=np.uint8)
    reference = Image.fromarray(coarse.squeeze(-1) if len(mode) == 1 else coarse, mode).resize(
        (width, height), Image.Resampling.BILINEAR)
    (image,) = generate_variants(reference, engine="patch", seed=seed, size=64, balance=balance, tile=tile)
    assert image.size == (64, 64) and image.mode == mode
    exemplar = patch.exemplar_from(load_reference(reference), 64)
    pixels = np.asarray(image).reshape(64 * 64, -1)
    allowed = {tuple(p) for p in exemplar.reshape(-1, exemplar.shape[2])}
    assert {tuple(p) for p in pixels} <= allowed  # nothing invented, alpha stays with its colour
