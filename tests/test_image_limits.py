"""Every image file is checked from its header before anything is decoded (backend.images.read_header,
one table of limits: docs/PROTOCOL.md "Limits"): inputs, material maps of every depth and format, masks
and sketches. The bombs go through the real service process."""

from __future__ import annotations

import array

import numpy as np
import png
import pytest
import tifffile
from PIL import Image

from backend.errors import InputError
from backend.images import MAX_SIDE, MAX_SOURCE_SIDE, load_reference, read_header
from tests.service_process import ServiceProcess

PATCH = dict(engine="patch", size=64)
WIDE = MAX_SOURCE_SIDE + 108  # one side over every limit, the other tiny: cheap to write, refused all the same
OVER = MAX_SIDE + 808  # over the side read as it is, within the side read reduced


def _float_tiff_bomb(path, side: int = 20480):
    """A 1.6 GB float32 image in a few hundred KB: zlib tiles of zeros."""
    tile = np.zeros((1024, 1024), np.float32)
    tifffile.imwrite(path, (tile for _ in range((side // 1024) ** 2)), shape=(side, side), dtype="float32",
                     tile=(1024, 1024), compression="zlib")
    return path


def _png16_rgb(path, width: int, height: int):
    rows = (array.array("H", [0] * (width * 3)) for _ in range(height))
    with open(path, "wb") as f:
        png.Writer(width, height, greyscale=False, bitdepth=16).write(f, rows)
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda p: Image.new("RGB", (40, 30)).save(p / "a.png") or p / "a.png", ("PNG", 40, 30, 3, 8, False)),
    (lambda p: _png16_rgb(p / "b.png", 20, 10), ("PNG", 20, 10, 3, 16, False)),
    (lambda p: tifffile.imwrite(p / "c.tif", np.zeros((12, 34, 3), np.float32), photometric="rgb") or p / "c.tif",
     ("TIFF", 34, 12, 3, 32, True)),
    (lambda p: tifffile.imwrite(p / "d.tif", np.zeros((12, 34), np.uint16)) or p / "d.tif",
     ("TIFF", 34, 12, 1, 16, False)),
    (lambda p: Image.new("L", (50, 60)).save(p / "e.jpg") or p / "e.jpg", ("JPEG", 50, 60, 1, 8, False)),
])
def test_the_header_says_what_decoding_gives(tmp_path, make, expected):
    header = read_header(make(tmp_path))
    assert (header.format, header.width, header.height, header.channels, header.bits, header.floating) == expected


def test_a_tiff_bomb_is_refused_from_its_header_in_milliseconds(tmp_path):
    bomb = _float_tiff_bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(InputError, match="20480x20480 px: larger than 8192"):
        read_header(bomb, "roughness map")


def test_every_image_path_of_a_job_is_checked_before_decoding_through_the_service(tmp_path, color_texture_path):
    bomb = _float_tiff_bomb(tmp_path / "bomb.tif")
    wide16 = _png16_rgb(tmp_path / "wide16.png", WIDE, 4)
    wide_tiff16 = tmp_path / "wide16.tif"
    tifffile.imwrite(wide_tiff16, np.zeros((4, WIDE, 3), np.uint16))
    wide8 = tmp_path / "wide8.png"
    Image.new("L", (WIDE, 40)).save(wide8)
    proc = ServiceProcess(tmp_path)
    try:
        warm = proc.send("generate", input=str(color_texture_path), output_dir=str(tmp_path / "warm"), **PATCH)
        assert proc.job_events(warm)[-1]["type"] == "result"
        rss_start = proc.rss_mb()
        cases = {
            "float TIFF map": dict(maps={"roughness": str(bomb)}),
            "16-bit PNG map": dict(maps={"normal": str(wide16)}),
            "16-bit TIFF map": dict(maps={"normal": str(wide_tiff16)}),
            "8-bit map": dict(maps={"height": str(wide8)}),
            "input": dict(input=str(wide8)),
        }
        for n, (case, fields) in enumerate(cases.items()):
            job = tmp_path / f"job{n}"
            request = {"input": str(color_texture_path), "output_dir": str(job), **PATCH, **fields}
            final = proc.job_events(proc.send("generate", **request))[-1]
            assert final["type"] == "error" and final["code"] == "bad_input", (case, final)
            assert f"{WIDE}x" in final["message"] or "20480x20480" in final["message"], (case, final)
            assert not job.exists(), case  # nothing written
        assert proc.rss_mb() - rss_start < 100
    finally:
        assert proc.stop() == 0


def test_masks_and_sketches_go_through_the_same_check(tmp_path):
    from backend.masks import read_mask
    from backend.sketches import load_sketch

    wide = tmp_path / "wide.png"
    Image.new("L", (WIDE, 40)).save(wide)
    for read in (read_mask, lambda p: load_sketch(p, 64)):
        with pytest.raises(InputError, match=f"{WIDE}x40 px: larger than {MAX_SOURCE_SIDE} px"):
            read(wide)


# --- sources over MAX_SIDE, up to MAX_SOURCE_SIDE: read reduced by a whole factor ------------------

def _ramp(width: int, height: int) -> np.ndarray:
    """R = x mod 256, G = y mod 256, B a 1-px checker: each 2x2 block's mean is known exactly."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([x % 256, y % 256, (x + y) % 2 * 255], axis=-1).astype(np.uint8)


def test_a_reference_over_the_limit_is_read_reduced_to_block_means(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(_ramp(OVER, 66)).save(path, compress_level=1)
    ref = load_reference(path)
    assert ref.size == (OVER // 2, 33) and ref.read_from == (OVER, 66)
    assert ref.record() == {"reference": str(path), "reference_read_from": [OVER, 66]}
    pixels = np.asarray(ref.rgb).astype(float)
    x, y = np.arange(OVER // 2), np.arange(33)
    assert np.abs(pixels[0, :, 0] - (2 * x % 256 + 0.5)).max() <= 0.5
    assert np.abs(pixels[:, 0, 1] - (2 * y + 0.5)).max() <= 0.5
    assert set(np.unique(pixels[..., 2])) <= {127, 128}
    assert load_reference(tmp_path / "scan.png").size == ref.size  # an odd remainder would be left out
    small = tmp_path / "small.png"
    Image.fromarray(_ramp(100, 66)).save(small)
    assert load_reference(small).read_from is None and "reference_read_from" not in load_reference(small).record()


def test_alpha_and_16_bit_grey_are_reduced_with_their_depth(tmp_path):
    from backend.materials.maps import read_map

    rgba = np.dstack([_ramp(OVER, 80), np.full((80, OVER), 100, np.uint8)])
    rgba[:, : 2 * 10, 3] = 0  # the first ten output columns transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    ref = load_reference(tmp_path / "cut.png")
    assert ref.alpha is not None and np.asarray(ref.alpha)[0, :12].tolist() == [0] * 10 + [100, 100]
    height = (np.arange(OVER)[None, :] * 7 % 65536 * np.ones((40, 1))).astype(np.uint16)
    Image.fromarray(height).save(tmp_path / "height.png")
    loaded = read_map(tmp_path / "height.png", "height").pixels[..., 0]
    assert loaded.dtype == np.uint16 and loaded.shape == (20, OVER // 2)
    expected = (height[:, 0:OVER - OVER % 2:2].astype(float) + height[:, 1:OVER:2]) / 2
    assert np.abs(loaded[0].astype(float) - expected[0]).max() <= 0.5  # 16-bit means, not 8-bit


def test_what_is_not_read_reduced_says_how_to_fix_it(tmp_path):
    from backend.materials.maps import read_map

    with pytest.raises(InputError, match=f"{OVER}x4 px: larger than {MAX_SIDE}") as e:  # pypng's 16-bit colour
        read_map(_png16_rgb(tmp_path / "n.png", OVER, 4), "normal")
    assert "8-bit PNG" in e.value.hint
    with pytest.raises(InputError, match=f"larger than {MAX_SIDE} px\n"):
        read_header(tmp_path / "n.png")  # a caller that does not reduce keeps the plain limit


def test_a_reduced_reference_is_said_in_the_result(tmp_path):
    from backend.api import generate
    from backend.params import GenerationParams

    path = tmp_path / "scan.png"
    Image.fromarray(_ramp(OVER, 96)).save(path)
    params = GenerationParams.build(engine="patch", size=64, seed=1, variants=1)
    [image] = generate(path, params)
    import json

    assert json.loads(image.info["parameters"])["reference_read_from"] == [OVER, 96]
