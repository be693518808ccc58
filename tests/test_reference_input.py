"""Input handling: every kind of reference image is either read (as documented) or refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.errors import InputError
from backend.framing import center_square
from backend.images import load_reference


def _gradient(w, h):
    x = np.linspace(0, 1, w)[None, :] * np.linspace(0.2, 1, h)[:, None]
    return x


CASES = [(fmt, ext, mode) for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("WEBP", "webp")]
         for mode in ["RGB", "L", "RGBA"] if not (fmt == "JPEG" and mode == "RGBA")]  # JPEG has no alpha


@pytest.mark.parametrize("fmt, ext, mode", CASES)
def test_common_formats_and_modes_are_read_as_8bit_rgb(tmp_path, fmt, ext, mode):
    arr = (_gradient(80, 48) * 255).astype(np.uint8)
    image = Image.fromarray(arr, "L").convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.fromarray((arr // 2).astype(np.uint8), "L"))
    path = tmp_path / f"ref.{ext}"
    image.save(path, format=fmt)
    ref = load_reference(path)
    assert ref.rgb.mode == "RGB" and ref.size == (80, 48)
    assert ref.grayscale == (mode == "L" and fmt != "WEBP")  # WebP has no grey mode: read as colour
    assert (ref.alpha is not None) == (mode == "RGBA")
    # lossy formats change pixels a little, never the picture
    assert np.abs(np.asarray(ref.rgb.convert("L"), float) - arr).mean() < 4


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    arr16 = (_gradient(64, 64) * 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr16).save(path)
    ref = load_reference(path)
    got = np.asarray(ref.rgb.convert("L"), float)
    assert ref.grayscale and got.max() >= 250  # full range kept, not clipped to the lowest 8 bits
    assert np.abs(got - arr16 / 257.0).max() <= 1.0


def test_non_square_references_are_centre_cropped_to_the_output_size():
    image = Image.fromarray((_gradient(120, 60) * 255).astype(np.uint8)).convert("RGB")
    square = center_square(image, 64)
    assert square.size == (64, 64)
    expected = image.crop((30, 0, 90, 60)).resize((64, 64), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(square), np.asarray(expected))


@pytest.mark.parametrize("size, message", [((16, 200), "too small"), ((16500, 40), "larger than")])
def test_too_small_or_too_large_images_are_refused_with_a_hint(tmp_path, size, message):
    path = tmp_path / "odd.png"
    Image.new("L", size).save(path)
    with pytest.raises(InputError, match=message) as e:
        load_reference(path)
    assert e.value.hint


def test_unreadable_inputs_are_refused(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        load_reference(text)
    with pytest.raises(InputError, match="not found"):
        load_reference(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        load_reference(tmp_path)
