"""The map correspondence converges: on variants that are exact shuffles of 16-px blocks of real
textures (so every pixel inside a block has an exact, zero-cost source) it finds that source, and
maps carried through it equal the maps shuffled the same way there; `carry-maps` writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from backend.cli import main
from backend.materials.correspondence import correspond
from backend.materials.maps import gather

SIZE, BLOCK = 256, 16
PATCH_REACH = 3  # 7 x 7 patches: pixels at least 3 px from a block's border have their exact source


def texture(name: str) -> np.ndarray:
    import skimage.data

    from backend.framing import center_square

    image = center_square(Image.fromarray(getattr(skimage.data, name)()), SIZE)
    return np.asarray(image.convert("RGB"))


def shuffled_blocks(size: int, block: int, seed: int) -> np.ndarray:
    """(size, size, 2) source coordinates of a random permutation of the block grid."""
    n = size // block
    order = np.random.default_rng(seed).permutation(n * n)
    yy, xx = np.indices((size, size))
    source = order[(yy // block) * n + xx // block]
    return np.stack([(source // n) * block + yy % block, (source % n) * block + xx % block], axis=2)


def inside_blocks(size: int, block: int) -> np.ndarray:
    offset = np.arange(size) % block
    inner = (offset >= PATCH_REACH) & (offset < block - PATCH_REACH)
    return inner[:, None] & inner[None, :]


@pytest.mark.parametrize("name", ["grass", "gravel", "brick"])  # smooth, semi-regular, regular
def test_pixels_inside_shuffled_blocks_find_their_exact_source(name):
    ref = texture(name)
    truth = shuffled_blocks(SIZE, BLOCK, seed=3)
    variant = gather(ref, truth)
    found = correspond(variant, ref)
    inside = inside_blocks(SIZE, BLOCK)
    exact = (found.coords == truth).all(axis=2)
    assert exact[inside].mean() >= 0.95, exact[inside].mean()
    # a map with nothing to do with the colour, carried through, equals the shuffled map there
    other = np.random.default_rng(7).integers(0, 65536, (SIZE, SIZE, 1)).astype(np.uint16)
    carried, expected = gather(other, found.coords), gather(other, truth)
    assert (carried == expected)[..., 0][inside].mean() >= 0.95
    assert np.array_equal(carried[..., 0][inside & exact], expected[..., 0][inside & exact])


def test_carry_maps_writes_each_map_once_and_never_overwrites(tmp_path, capsys):
    ref = texture("gravel")
    truth = shuffled_blocks(SIZE, BLOCK, seed=4)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(gather(ref, truth)).save(tmp_path / "variant.png")
    rough = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(rough, "L").save(tmp_path / "rough.png")
    args = ["carry-maps", str(tmp_path / "variant.png"), "--reference", str(tmp_path / "ref.png"),
            "--map", f"roughness={tmp_path / 'rough.png'}", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    captured = capsys.readouterr()
    written = tmp_path / "out" / "variant-roughness.png"
    assert captured.out.split() == [str(written)]
    fidelity = json.loads(captured.err.strip().splitlines()[-1])
    assert 0 <= fidelity["correspondence_mae"] <= fidelity["correspondence_rmse"] < 0.1
    got = np.asarray(Image.open(written))
    inside = inside_blocks(SIZE, BLOCK)
    assert (got == gather(rough[..., None], truth)[..., 0])[inside].mean() >= 0.95
    record = json.loads(Image.open(written).text["parameters"])
    assert record["reference"] == str(tmp_path / "ref.png") and "correspondence_rmse" in record
    before = written.read_bytes()
    assert main(args) == 2  # the name is taken: refused, nothing overwritten
    assert "already exist" in capsys.readouterr().err and written.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["variant-roughness.png"]  # no temporaries
