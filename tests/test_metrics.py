"""The texture metrics on cases whose answer is known."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.feature import match_template

from backend import metrics
from tests.conftest import ROOT


def periodic_noise(size: int, seed: int, channels: int = 1) -> np.ndarray:
    """Band-limited noise built in the Fourier domain: exactly periodic, so perfectly tileable."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.standard_normal((size, size, channels)), axes=(0, 1))
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    spectrum *= (np.exp(-(radius / 0.08) ** 2))[..., None]
    image = np.real(np.fft.ifft2(spectrum, axes=(0, 1)))
    image = (image - image.min()) / (image.max() - image.min())
    return image[..., 0] if channels == 1 else image


@pytest.fixture(scope="module")
def gravel():
    return skimage.data.gravel()


@pytest.fixture(scope="module")
def grass():
    return skimage.data.grass()


# ------------------------------------------------------------------------------ seam score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tileable_image_scores_about_one(seed):
    score = metrics.seam_score(periodic_noise(256, seed))
    assert 0.8 <= score["x"] <= 1.25 and 0.8 <= score["y"] <= 1.25, score


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_a_crop_of_a_photo_scores_high(name):
    crop = getattr(skimage.data, name)()[40:296, 100:356]
    score = metrics.seam_score(crop)
    assert score["x"] > 2 and score["y"] > 2, score


def test_seam_axes_are_told_apart():
    # Periodic across x, a ramp down y: only the y border is a seam.
    image = periodic_noise(256, 3) * 0.5 + np.linspace(0, 0.5, 256)[:, None]
    score = metrics.seam_score(image)
    assert score["x"] < 1.25 and score["y"] > 3, score


def test_seam_score_of_flat_images():
    assert metrics.seam_score(np.full((64, 64), 0.5)) == {"x": 1.0, "y": 1.0}
    stripe = np.zeros((64, 64))
    stripe[:, -1] = 1.0  # the only step is at the wrap-around border
    assert metrics.seam_score(stripe)["x"] == float("inf")


# ----------------------------------------------------------------------- appearance distance


def test_appearance_of_the_exemplar_itself_and_of_shifted_and_flipped_copies_is_small(gravel):
    assert metrics.appearance_distance(gravel, gravel) < 0.3
    assert metrics.appearance_distance(np.roll(gravel, (100, 37), axis=(0, 1)), gravel) < 0.4
    assert metrics.appearance_distance(gravel[:, ::-1], gravel) < 0.6


def test_noise_and_another_texture_are_far(gravel, grass):
    rng = np.random.default_rng(0)
    assert metrics.appearance_distance(rng.integers(0, 256, gravel.shape, dtype=np.uint8), gravel) > 4
    assert metrics.appearance_distance(grass, gravel) > 2
    # A blurred copy keeps the colours but loses the grain: clearly further than a shifted copy.
    blurred = np.asarray(Image.fromarray(gravel).resize((128, 128)).resize((512, 512)))
    assert metrics.appearance_distance(blurred, gravel) > 1.5


def test_appearance_is_deterministic_and_handles_gray_against_colour(gravel):
    colour = np.stack([gravel] * 3, axis=-1)
    a = metrics.appearance_distance(colour, gravel)
    assert a == metrics.appearance_distance(colour, gravel)
    assert a < 0.3  # the same pixels, once gray and once as RGB


# -------------------------------------------------------------------------------- copy score


@settings(max_examples=8, deadline=None)
@given(dy=st.integers(0, 255), dx=st.integers(0, 255))
def test_a_shifted_copy_scores_one(dy, dx):
    exemplar = skimage.data.gravel()[:256, :256]
    assert metrics.copy_score(np.roll(exemplar, (dy, dx), axis=(0, 1)), exemplar) > 0.99


def test_unrelated_images_score_low(gravel, grass):
    rng = np.random.default_rng(0)
    assert metrics.copy_score(rng.random((256, 256)), gravel) < 0.1
    assert metrics.copy_score(grass, gravel) < 0.2


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), channels=st.sampled_from([1, 3]))
def test_normalised_correlation_matches_scikit_image(seed, channels):
    rng = np.random.default_rng(seed)
    image = rng.random((40, 48, channels))
    template = rng.random((12, 10, channels))
    ours = metrics._NormalisedCorrelation(image, 12, 10).max(template)
    theirs = float(match_template(image, template).max())
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_a_flat_output_copies_nothing(gravel):
    assert metrics.copy_score(np.full((128, 128), 0.3), gravel) == 0.0


# ------------------------------------------------------------------------------- structure


def brick_wall(size: int = 512, brick: tuple[int, int] = (32, 64), mortar: int = 4, seed: int = 0) -> np.ndarray:
    """A frontal running-bond brick wall: bricks (h, w) px, half-brick stagger, shaded bricks, light mortar."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    bh, bw = brick
    y, x = np.mgrid[:size, :size]
    row = y // bh
    xs = x + (row % 2) * (bw // 2)
    in_mortar = ((y % bh) < mortar) | ((xs % bw) < mortar)
    shade = rng.uniform(0.35, 0.55, (size // bh + 2, size // bw + 3))[row, xs // bw]
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5) * 0.08
    return (np.clip(np.where(in_mortar, 0.8, shade) + grain, 0, 1) * 255).astype(np.uint8)


def jittered(image: np.ndarray, block: int, seed: int) -> np.ndarray:
    """Every block x block square taken from a randomly shifted copy: the lattice broken at block borders."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    for y in range(0, image.shape[0], block):
        for x in range(0, image.shape[1], block):
            dy, dx = rng.integers(-20, 21, 2)
            out[y:y + block, x:x + block] = np.roll(image, (dy, dx), axis=(0, 1))[y:y + block, x:x + block]
    return out


def test_structure_is_zero_for_the_exemplar_and_low_for_a_shifted_or_new_wall():
    wall = brick_wall()
    assert metrics.structure_distance(wall, wall) == 0.0
    assert metrics.structure_distance(np.roll(wall, (37, 90), axis=(0, 1)), wall) < 0.7
    assert metrics.structure_distance(brick_wall(seed=5), wall) < 1.2  # same lattice, new shades


@pytest.mark.parametrize("block", [64, 128])
def test_structure_sees_a_broken_lattice(block):
    wall = brick_wall()
    assert metrics.structure_distance(jittered(wall, block, seed=1), wall) > 2.5


def test_structure_tells_textures_apart(gravel):
    assert metrics.structure_distance(gravel, brick_wall()) > 3
    assert metrics.structure_distance(np.roll(gravel, (100, 37), axis=(0, 1)), gravel) < 1.0


# ----------------------------------------------------------------------------- proportions


def test_proportions_of_the_same_picture_and_of_another_mix():
    tissue = skimage.data.immunohistochemistry()
    assert metrics.proportion_distance(tissue, tissue) == 0.0
    assert metrics.proportion_distance(np.roll(tissue, (200, 100), axis=(0, 1)), tissue) < 0.05
    # Half the picture replaced by one of its own regions: the mix has changed that much.
    brown = tissue.copy()
    brown[:, 256:] = tissue[:256, :256].repeat(2, axis=0)
    assert metrics.proportion_distance(brown, tissue) > 0.2
    assert metrics.proportion_distance(tissue[..., ::-1], tissue) > 0.5  # other colours altogether


def test_proportions_of_gray_images(gravel):
    assert metrics.proportion_distance(gravel, gravel) == 0.0
    assert metrics.proportion_distance(np.clip(gravel.astype(int) + 60, 0, 255).astype(np.uint8), gravel) > 0.4


# ------------------------------------------------------------------------------------- cli


def test_metrics_cli_prints_one_line_per_output(tmp_path, gravel):
    Image.fromarray(gravel).save(tmp_path / "ex.png")
    Image.fromarray(np.roll(gravel, 50, axis=1)).save(tmp_path / "shifted.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(tmp_path / "noise.png")
    result = subprocess.run(
        [sys.executable, "-m", "backend", "metrics", str(tmp_path / "shifted.png"), str(tmp_path / "noise.png"),
         "--exemplar", str(tmp_path / "ex.png"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    shifted, noise = (json.loads(line) for line in result.stdout.splitlines())
    assert shifted["copy"] > 0.99 and noise["copy"] < 0.1
    assert shifted["appearance"] < 0.5 < 4 < noise["appearance"]
    assert shifted["proportion"] < 0.05 and shifted["structure"] < noise["structure"]


def test_metrics_cli_says_what_is_wrong_with_a_missing_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "backend", "metrics", str(tmp_path / "nope.png"),
                             "--exemplar", str(tmp_path / "nope.png")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not found" in result.stderr


def test_inputs_16_bit_scaled_alpha_dropped_tiny_refused():
    u16 = (np.random.default_rng(0).random((16, 16)) * 65535).astype(np.uint16)
    np.testing.assert_allclose(metrics.as_array(Image.fromarray(u16))[..., 0], u16 / 65535.0, atol=1e-6)
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert metrics.as_array(rgba).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="at least 3 x 3"):
        metrics.seam_score(np.zeros((2, 40)))
