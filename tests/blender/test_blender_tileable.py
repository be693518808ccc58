"""In real Blender: Make Tileable on a material with colour, roughness and a 16-bit normal map
(docs/guide/make-tileable.md): the result at the texture's own size, tiling, its maps repaired alike,
then Apply -> Bake -> Revert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.materials.maps import read_map
from backend.metrics import seam_score
from tests.blender.conftest import run_scenario
from tests.blender.test_blender_materials import normal16
from tests.test_materials import _png16_rgb, luminance8

pytestmark = pytest.mark.blender
W, H = 128, 96  # not square: the result keeps the texture's own size


@pytest.fixture(scope="module")
def wall_files(tmp_path_factory) -> Path:
    """scikit-image's CC0 brick, cut off its period, as colour + roughness + 16-bit normal: the maps made
    pixel-wise from the colour, so the result's maps can be checked against its own colour exactly."""
    import skimage.data

    folder = tmp_path_factory.mktemp("wall")
    gray = np.asarray(Image.fromarray(skimage.data.brick()[:384]).resize((W, H), Image.Resampling.LANCZOS), np.float64)
    rgb = np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "wall.png")
    Image.fromarray(255 - luminance8(rgb)).save(folder / "wall_rough.png")
    _png16_rgb(folder / "wall_nrm16.png", normal16(rgb))
    return folder


@pytest.fixture(scope="module")
def tiled(tmp_path_factory, blender, wall_files):
    workdir = tmp_path_factory.mktemp("tileable")
    return run_scenario("scenario_tileable", workdir, blender, wall_files), wall_files


def test_tile_none_is_refused_with_what_to_do(tiled):
    data, _ = tiled
    assert data["no_axes"]["result"] is None and "Tile is None" in data["no_axes"]["error"]
    assert data["no_axes"]["unchanged"]


def test_the_result_is_the_texture_itself_made_tileable_with_its_maps(tiled):
    data, files = tiled
    assert data["make_tileable"]["error"] is None and data["make_tileable"]["invariant"] == []
    [result] = data["results"]
    assert result["engine"] == "tileable" and result["size"] == [W, H] and result["image"].endswith("tileable")
    assert data["history"][0] == "tileable"
    assert data["expectation"].startswith("Seam x ") and "% of the pixels kept" in data["expectation"]
    colour = np.asarray(Image.open(result["path"]).convert("RGB"))
    assert colour.shape == (H, W, 3)
    for axis in (0, 1):  # a brick wall: the wrap step is one of the wall's own steps (not above its 90th
        lines = np.moveaxis(colour.astype(np.float64), axis, 0)  # percentile), as in tests/test_tileable.py
        steps = np.abs(np.diff(lines, axis=0)).mean(axis=(1, 2))
        assert np.abs(lines[0] - lines[-1]).mean() <= np.quantile(steps, 0.9)
    assert max(seam_score(np.asarray(Image.open(files / "wall.png"))).values()) > 2  # the source did not tile
    band = np.asarray(Image.open(Path(result["path"]).with_name(Path(result["path"]).stem + "-band.png"))) > 0
    assert np.array_equal(colour[~band], np.asarray(Image.open(files / "wall.png"))[~band])
    rough = read_map(result["maps"]["roughness"], "roughness").pixels[..., 0]
    assert np.array_equal(rough, 255 - luminance8(colour))  # the maps follow the colour exactly
    normal = read_map(result["maps"]["normal"], "normal").pixels
    assert normal.dtype == np.uint16 and np.array_equal(normal, normal16(colour))


def test_apply_bake_revert_treat_it_like_a_variant(tiled):
    data, _ = tiled
    before, applied, baked, reverted = (data[k] for k in ("shown_before", "shown_applied", "shown_baked",
                                                          "shown_reverted"))
    for case in ("apply", "bake", "revert"):
        assert data[case]["error"] is None and data[case]["invariant"] == [], (case, data[case])
    assert all(applied[node][0] != before[node][0] for node in applied)  # colour and both maps applied
    assert all(Path(baked[node][1]).parent.name == "textures" for node in baked)
    assert reverted == before


def test_the_re_made_band_is_tinted_over_the_result_in_the_panel(tiled):
    data, _ = tiled
    [result] = data["results"]
    band = np.asarray(Image.open(result["path"].replace(".png", "-band.png"))) > 0
    overlay = data["overlay"]
    assert overlay["packed"] and overlay["size"] == [W, H]
    assert abs(overlay["tinted"] - band.mean()) < 0.01  # exactly the band's pixels, tinted
    assert "Orange: the band Make Tileable re-made" in data["panel_labels"]
