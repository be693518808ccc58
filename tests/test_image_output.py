"""Writing results: atomic, never overwriting, readable by others, parameters kept."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from backend.framing import tiled
from backend.images import save_png_atomic, unique_path


def test_png_carries_parameters_and_gets_normal_permissions(tmp_path):
    path = save_png_atomic(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", parameters='{"seed": 3}')
    with Image.open(path) as im:
        assert im.text["parameters"] == '{"seed": 3}'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"], "no temporary file may be left"


def test_an_existing_file_is_never_replaced_unless_asked(tmp_path):
    target = tmp_path / "user.png"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_png_atomic(Image.new("RGB", (8, 8)), target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["user.png"]
    save_png_atomic(Image.new("RGB", (8, 8)), target, overwrite=True)
    assert target.read_bytes().startswith(b"\x89PNG")


def test_unique_path_skips_taken_names(tmp_path):
    (tmp_path / "v.png").touch()
    (tmp_path / "v-2.png").touch()
    assert unique_path(tmp_path, "v") == tmp_path / "v-3.png"


def test_tiled_repeats_the_image_exactly():
    image = Image.effect_noise((16, 12), 50).convert("RGB")
    big = tiled(image, 3)
    assert big.size == (48, 36)
    for i in range(3):
        for j in range(3):
            assert big.crop((16 * i, 12 * j, 16 * i + 16, 12 * j + 12)).tobytes() == image.tobytes()
