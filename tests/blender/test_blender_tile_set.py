"""In real Blender: Make Tile Set -> Use Tile Set -> Bake Layout -> Stop on a material with colour,
roughness and a 16-bit normal map (docs/guide/tile-sets.md). The baked layout, made by Cycles through
the Wang Layout node group, must equal the backend's own layout of the same JSON and seed pixel for
pixel, for every map: the node group and backend/tileset/layout.py are one rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.materials.maps import read_map
from tests.blender.conftest import run_scenario
from tests.blender.test_blender_tileable import wall_files  # noqa: F401  (the fixture)
from tests.conftest import ROOT

pytestmark = pytest.mark.blender
CELLS, SEED, TILE = (4, 3), 7, 32
GROUP = "Texture Variants Wang Layout"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, blender, wall_files):  # noqa: F811
    return run_scenario("scenario_tile_set", tmp_path_factory.mktemp("tile_set"), blender, wall_files)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_tiles_larger_than_the_texture_are_refused_with_what_to_do(tiles):
    assert tiles["too_large"]["result"] is None and tiles["too_large"]["unchanged"]
    assert "smaller than the 1024 px tiles" in tiles["too_large"]["error"]
    assert "set Tile Size to" in tiles["too_large"]["error"]


def test_make_tile_set_stores_the_set_and_its_atlases_without_touching_the_tree(tiles):
    assert tiles["make"]["error"] is None, tiles["make"]
    spec = tiles["spec"]
    assert spec["colours"] == 2 and spec["tile_size"] == TILE and len(spec["tiles"]) == 16
    side = 4 * (TILE + 2 * spec["padding"])
    atlases = tiles["atlases"]
    assert sorted(atlases) == ["color", "normal", "roughness"]
    assert all(size == [side, side] for _, size, _, _ in atlases.values())
    assert atlases["color"][3] == "sRGB" and atlases["normal"][3] == atlases["roughness"][3] == "Non-Color"
    assert tiles["unchanged_by_make"]
    assert ["operator", "texture_variants.use_tile_set"] in tiles["panel_made"]


def test_use_puts_the_layout_group_in_front_of_every_map_and_survives_reopening(tiles):
    assert tiles["use"]["error"] is None
    atlas_names = {name: entry[0] for name, entry in tiles["atlases"].items()}
    expected = {"Texture": atlas_names["color"], "Roughness": atlas_names["roughness"], "Normal": atlas_names["normal"]}
    for node, (image, source, group) in tiles["feeds_on"].items():
        assert image == expected[node] and source == "ShaderNodeGroup" and group == GROUP
    inputs = tiles["group_inputs"]
    assert inputs["Scale"] == 6.0 and inputs["Seed"] == SEED and inputs["Colours"] == 2 and inputs["Tile"] == TILE
    assert tiles["feeds_reopened"] == tiles["feeds_on"]
    assert ["operator", "texture_variants.bake_tile_layout"] in tiles["panel_on"]


def test_apply_is_refused_while_the_set_is_shown(tiles):
    outcome = tiles["apply_while_on"]
    assert outcome["result"] is None and outcome["unchanged"]
    assert "Stop Tile Set" in outcome["error"]


def _backend_layout(spec_file: Path, out: Path) -> dict[str, np.ndarray]:
    """The backend's layout of the same set, seed and cells: {atlas name: pixels}."""
    run = subprocess.run([sys.executable, "-m", "backend", "tileset-layout", str(spec_file), "--cells",
                          f"{CELLS[0]}x{CELLS[1]}", "--seed", str(SEED), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    made = {}
    for file in out.iterdir():
        name = file.stem.rsplit(f"-wang-layout-{CELLS[0]}x{CELLS[1]}", 1)[-1].lstrip("-") or "color"
        made[name] = _pixels(file) if name == "color" else read_map(file, name).pixels
    return made


def test_the_baked_layout_is_the_backends_layout_pixel_for_pixel(tiles, tmp_path):
    assert tiles["bake"]["error"] is None, tiles["bake"]
    [layout] = tiles["layout"]
    assert layout["engine"] == "layout" and layout["size"] == [CELLS[0] * TILE, CELLS[1] * TILE]
    folder = Path(tiles["atlases"]["color"][2]).parent  # the atlases as Blender keeps them, beside the .blend
    spec_file = folder / "set-wang.json"
    spec = dict(tiles["spec"], atlas={name: Path(entry[2]).name for name, entry in tiles["atlases"].items()})
    spec_file.write_text(json.dumps(spec))
    reference = _backend_layout(spec_file, tmp_path / "backend")
    baked = {"color": _pixels(layout["file"]),
             **{name: read_map(path, name).pixels for name, path in layout["maps"].items()}}
    assert sorted(baked) == sorted(reference) == ["color", "normal", "roughness"]
    for name, pixels in baked.items():
        assert pixels.dtype == reference[name].dtype, name  # the 16-bit normal stays 16-bit
        assert np.array_equal(pixels[..., :3], reference[name][..., :3]), name
    assert "tile set layout" in tiles["history"][0]


def test_no_cell_boundary_shows_a_seam_and_the_layout_tiles(tiles):
    colour = _pixels(tiles["layout"][0]["file"])[..., :3].astype(np.float64)
    for axis in (0, 1):
        lines = np.moveaxis(colour, axis, 0)
        steps = np.abs(np.diff(lines, axis=0, append=lines[:1])).mean(axis=(1, 2))  # the last one is the wrap
        joins = steps[TILE - 1::TILE]  # across each cell boundary, the wrap included
        inside = np.delete(steps, np.arange(TILE - 1, len(steps), TILE))
        assert joins.max() <= np.percentile(inside, 95), (axis, joins, np.percentile(inside, 95))


def test_stop_puts_the_tree_back_exactly_and_the_layout_applies_like_a_variant(tiles):
    assert tiles["stop"]["error"] is None
    assert tiles["restored"], tiles["difference"]
    assert ["operator", "texture_variants.make_tile_set"] in tiles["panel_off"]
    assert tiles["apply_layout"]["error"] is None
    layout = tiles["layout"][0]
    assert tiles["applied"]["Texture"] == layout["image"]
