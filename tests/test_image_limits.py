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
from backend.images import MAX_SIDE, read_header
from tests.service_process import ServiceProcess

PATCH = dict(engine="patch", size=64)
WIDE = MAX_SIDE + 108  # one side over the limit, the other tiny: cheap to write, refused all the same


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
        with pytest.raises(InputError, match=f"{WIDE}x40 px: larger than {MAX_SIDE}"):
            read(wide)
