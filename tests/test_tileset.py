"""Wang tile sets (backend/tileset/): edges that match by code, a layout without repetition, maps that
follow the colour exactly, the layout rule (Blender's White Noise hash) and the files on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from backend import make_tileset, tileset_layout
from backend.errors import InputError
from backend.metrics import repetition
from backend.tileset import atlas, layout
from backend.tileset.patch import bands
from tests.conftest import ROOT

TILE = 64


@pytest.fixture(scope="module")
def gravel_set():
    return make_tileset(Image.fromarray(skimage.data.gravel()[:256, :256]), size=TILE, seed=3, engine="patch")


def _tiles(tileset) -> np.ndarray:
    arr = np.asarray(tileset.atlas, dtype=np.float64)
    return atlas.tiles_of(arr[..., None] if arr.ndim == 2 else arr, tileset.geometry)


def _pairs(colours: int, one: str, other: str):
    """(a, b): every pair of tile indices whose `one` edge code equals b's `other` edge code."""
    for a in range(colours**4):
        for b in range(colours**4):
            if layout.codes_of(a, colours)[one] == layout.codes_of(b, colours)[other]:
                yield a, b


def assert_shared_edges_identical(tiles: np.ndarray, colours: int = 2) -> None:
    """Tiles that share an edge code have identical pixels along that edge: horizontal edges in full,
    corners included; vertical edges but for their end pixels (the horizontal edges' corners)."""
    for index in range(colours**4):
        codes = layout.codes_of(index, colours)
        for other in range(colours**4):
            mine = layout.codes_of(other, colours)
            if codes["n"] == mine["n"]:
                assert np.array_equal(tiles[index][0], tiles[other][0])
            if codes["s"] == mine["s"]:
                assert np.array_equal(tiles[index][-1], tiles[other][-1])
            if codes["w"] == mine["w"]:
                assert np.array_equal(tiles[index][1:-1, 0], tiles[other][1:-1, 0])
            if codes["e"] == mine["e"]:
                assert np.array_equal(tiles[index][1:-1, -1], tiles[other][1:-1, -1])


def test_tiles_that_share_an_edge_code_have_identical_edge_pixels(gravel_set):
    assert_shared_edges_identical(_tiles(gravel_set))


def test_joins_step_like_the_inside_of_a_tile(gravel_set):
    """Across every E/W and N/S join of matching tiles the step is within the tiles' own steps."""
    tiles = _tiles(gravel_set)
    inside = np.concatenate([np.abs(np.diff(t, axis=1)).mean(axis=(0, 2)) for t in tiles]
                            + [np.abs(np.diff(t, axis=0)).mean(axis=(1, 2)) for t in tiles])
    low, high = np.quantile(inside, [0.02, 0.98])
    across = [np.abs(tiles[a][:, -1] - tiles[b][:, 0]).mean() for a, b in _pairs(2, "e", "w")]
    across += [np.abs(tiles[a][-1] - tiles[b][0]).mean() for a, b in _pairs(2, "s", "n")]
    assert len(across) == 2 * 128
    assert low <= min(across) and max(across) <= high, (min(across), max(across), low, high)
    assert abs(np.median(across) / np.median(inside) - 1) < 0.15


def test_a_random_layout_does_not_repeat_at_the_tile_period(gravel_set):
    tiles = _tiles(gravel_set)
    cells = layout.cell_tiles(16, 16, 2, seed=5)
    wang = repetition(layout.render(tiles, cells), TILE)
    tileable = layout.tile_index(0, 1, 0, 1, 2)  # n == s and e == w: this tile tiles with itself
    repeat = repetition(layout.render(tiles, np.full((16, 16), tileable)), TILE)
    assert wang <= 0.35 and repeat >= 0.9, (wang, repeat)


def test_tiles_differ_inside_their_edge_bands(gravel_set):
    """No two tiles share more than 45 % of their pixels (the most alike differ in one edge code and
    share three edge bands); inside the edge bands, no two tiles share more than 5 %."""
    tiles = _tiles(gravel_set)
    kept, overlap = bands(TILE)
    margin = kept + overlap
    worst_all = worst_inner = 0.0
    for a in range(16):
        for b in range(a + 1, 16):
            same = (tiles[a] == tiles[b]).all(axis=2)
            worst_all = max(worst_all, same.mean())
            worst_inner = max(worst_inner, same[margin:-margin, margin:-margin].mean())
    assert worst_all <= 0.45 and worst_inner <= 0.05, (worst_all, worst_inner)


def test_maps_follow_the_colour_exactly_padding_included(tmp_path):
    colour = skimage.data.astronaut()[100:292, 150:342]
    rough, height = tmp_path / "rough.png", tmp_path / "height.png"
    Image.fromarray(255 - colour[..., 0]).save(rough)
    Image.fromarray(colour[..., 1].astype(np.uint16) * 257).save(height)  # 16-bit stays 16-bit
    tileset = make_tileset(Image.fromarray(colour), size=TILE, padding=6, engine="patch",
                           maps={"roughness": str(rough), "height": str(height)})
    out = np.asarray(tileset.atlas)
    assert out.shape == (4 * (TILE + 12), 4 * (TILE + 12), 3)
    assert np.array_equal(tileset.maps["roughness"].pixels[..., 0], 255 - out[..., 0])
    assert tileset.maps["height"].pixels.dtype == np.uint16
    assert np.array_equal(tileset.maps["height"].pixels[..., 0], out[..., 1].astype(np.uint16) * 257)


def test_the_padding_continues_each_edge_so_sampling_never_bleeds(gravel_set):
    """The padding above a tile is the same for every tile with that north code, and it is what the
    tile above shows there: its rows next to the join equal the bottom rows of any tile whose south
    code is k (the rows the edge band keeps, away from the corners where the cuts run)."""
    g = gravel_set.geometry
    arr = np.asarray(gravel_set.atlas, dtype=np.int16)
    p, t = g.padding, g.tile
    kept, _ = bands(t)
    middle = slice(t // 4, 3 * t // 4)
    for a, b in _pairs(2, "n", "s"):
        (ya, xa), (yb, xb) = g.origin(a), g.origin(b)
        above = arr[ya - p:ya, xa:xa + t]
        assert np.array_equal(above[-kept:, middle], arr[yb + t - kept:yb + t, xb:xb + t][:, middle]), (a, b)
    for a, b in _pairs(2, "n", "n"):
        (ya, xa), (yb, xb) = g.origin(a), g.origin(b)
        assert np.array_equal(arr[ya - p:ya, xa:xa + t], arr[yb - p:yb, xb:xb + t])


def test_the_layout_hash_is_blenders_white_noise():
    """Blender's White Noise Texture (3D, Value) at these positions, read from Blender 4.5's and 5.0's
    own node (geometry nodes, the value stored on points there): the layout must equal it bit for bit."""
    positions = np.array([[0, 0, 0], [1, 2, 3], [0, 0, 1], [3, 5, 14], [-2, 7, 15], [15, 0, 0], [7, 7, 1]])
    blender = np.array([0.6110676527023315, 0.29459813237190247, 0.624534547328949, 0.9359524846076965,
                        0.8802391290664673, 0.1605743020772934, 0.2499210238456726], np.float32)
    assert np.array_equal(layout.white_noise(*positions.T), blender)
    # the codes: V from z = 2 * seed, H from z = 2 * seed + 1, floor(c * h) in float32
    assert layout.vertical_code(3, 5, 2, seed=7) == int(np.floor(np.float32(2) * blender[3]))
    assert layout.horizontal_code(0, 0, 3, seed=0) == int(np.floor(np.float32(3) * blender[2]))


def test_codes_agree_across_every_shared_edge_and_wrap_with_a_period():
    edges = layout.cell_edges(12, 9, 3, seed=11)
    assert np.array_equal(edges["e"][:, :-1], edges["w"][:, 1:])
    assert np.array_equal(edges["n"][:-1], edges["s"][1:])  # row 0 is the bottom: its north is row 1's south
    assert {int(v) for v in np.unique(edges["n"])} == {0, 1, 2}
    wrapped = layout.cell_edges(5, 4, 2, seed=2, period=(5, 4))
    assert np.array_equal(wrapped["e"][:, -1], wrapped["w"][:, 0])
    assert np.array_equal(wrapped["n"][-1], wrapped["s"][0])
    far = layout.cell_edges(5, 4, 2, seed=2, period=(5, 4), origin=(-15, 8))  # whole periods away
    assert all(np.array_equal(far[k], wrapped[k]) for k in "nesw")
    assert not np.array_equal(layout.cell_tiles(8, 8, 2, seed=0), layout.cell_tiles(8, 8, 2, seed=1))


def test_a_layout_is_the_tiles_of_its_cells_and_tiles_with_its_period(gravel_set, tmp_path):
    written = gravel_set.save(tmp_path, "gravel")
    image = tileset_layout(written["json"], "5x3", seed=7)
    out = np.asarray(image, dtype=np.int16)
    assert image.size == (5 * TILE, 3 * TILE)
    cells = layout.cell_tiles(5, 3, 2, 7, period=(5, 3))
    tiles = _tiles(gravel_set)
    for j in range(3):  # j = 0 is the bottom row of cells, at the bottom of the image
        for i in range(5):
            y0 = (2 - j) * TILE
            assert np.array_equal(out[y0:y0 + TILE, i * TILE:(i + 1) * TILE], tiles[cells[j, i]][..., 0])
    # wrapping: the right column's east codes are the left column's west codes, so the image tiles
    steps = np.abs(np.diff(out.astype(np.float64), axis=1)).mean(axis=0)
    assert np.abs(out[:, -1] - out[:, 0]).mean() <= np.quantile(steps, 0.98)


def test_bad_input_is_refused_with_a_hint(tmp_path):
    small = Image.fromarray(skimage.data.gravel()[:96, :96])
    with pytest.raises(InputError, match="smaller than a tile"):
        make_tileset(small, size=128, engine="patch")
    with pytest.raises(InputError, match="2 or 3 edge colours"):
        make_tileset(small, colours=5, engine="patch")
    odd = tmp_path / "odd.png"
    Image.fromarray(skimage.data.gravel()[:96, :48]).save(odd)
    with pytest.raises(InputError, match="another aspect"):
        make_tileset(small, size=32, engine="patch", maps={"roughness": str(odd)})
    with pytest.raises(InputError, match="NxM"):
        tileset_layout(tmp_path / "x.json", "eight")


def test_the_commands_write_the_set_and_a_layout_never_overwriting(tmp_path):
    source = tmp_path / "floor.png"
    Image.fromarray(skimage.data.gravel()[:160, :160]).save(source)
    rough = tmp_path / "rough.png"
    Image.fromarray(255 - skimage.data.gravel()[:160, :160]).save(rough)
    make = [sys.executable, "-m", "backend", "tileset", str(source), "--out", str(tmp_path / "out"), "--size", "48",
            "--map", f"roughness={rough}"]
    first = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    second = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = [p.rsplit("/", 1)[1] for p in first + second]
    assert names == ["floor-wang.json", "floor-wang-atlas.png", "floor-wang-atlas-roughness.png",
                     "floor-2-wang.json", "floor-2-wang-atlas.png", "floor-2-wang-atlas-roughness.png"]
    record = json.loads((tmp_path / "out" / "floor-wang.json").read_text())
    assert record["atlas"] == {"color": "floor-wang-atlas.png", "roughness": "floor-wang-atlas-roughness.png"}
    assert (record["colours"], record["tile_size"], record["padding"], record["columns"], record["rows"]) == (2, 48, 8, 4, 4)
    assert record["engine"] == "patch" and len(record["tiles"]) == 16
    assert record["tiles"][6] == {"index": 6, "column": 2, "row": 1, "edges": {"n": 0, "e": 1, "s": 1, "w": 0}}
    lay = [sys.executable, "-m", "backend", "tileset-layout", first[0], "--cells", "3x2", "--seed", "4", "--out",
           str(tmp_path / "out")]
    laid = subprocess.run(lay, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [p.rsplit("/", 1)[1] for p in laid] == ["floor-wang-layout-3x2.png", "floor-wang-layout-3x2-roughness.png"]
    colour, roughness = (np.asarray(Image.open(p), dtype=np.int16) for p in laid)
    assert colour.shape == (96, 144) and np.array_equal(roughness, 255 - colour)
    bad = subprocess.run(make[:-2] + ["--colours", "5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "2 or 3 edge colours" in bad.stderr


def test_the_service_makes_a_tile_set_and_lays_it_out(tmp_path):
    from tests.service_process import ServiceProcess

    source = tmp_path / "floor.png"
    Image.fromarray(skimage.data.gravel()[:160, :160]).save(source)
    proc = ServiceProcess(tmp_path)
    try:
        hello = proc.ask("hello")
        assert {"tileset", "tileset_layout"} <= set(hello["requests"])
        assert hello["tileset"]["choices"]["colours"] == [2, 3]
        job = proc.send("tileset", input=str(source), output_dir=str(tmp_path / "job"), size=48, engine="patch")
        events = proc.job_events(job)
        entry = events[-1]["files"][0]
        laid = proc.job_events(proc.send("tileset_layout", input=entry["json"], output_dir=str(tmp_path / "job"),
                                         cells="2x2", seed=1))
        refused = proc.ask("tileset", input=str(source), output_dir=str(tmp_path / "x"), colours=5)
        refused_cells = proc.ask("tileset_layout", input=entry["json"], output_dir=str(tmp_path / "x"), cells="0x2")
    finally:
        proc.stop()
    assert events[0]["type"] == "accepted" and events[-1]["type"] == "result"
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(1, 17))
    assert entry["path"].endswith("floor-wang-atlas.png") and entry["json"].endswith("floor-wang.json")
    assert entry["parameters"]["tile_size"] == 48
    assert laid[-1]["type"] == "result" and laid[-1]["files"][0]["path"].endswith("floor-wang-layout-2x2.png")
    assert refused["code"] == "bad_request" and refused["message"].startswith("tileset 'colours'")
    assert refused_cells["code"] == "bad_request" and "1 to 4096" in refused_cells["message"]


def test_on_a_brick_wall_every_tile_shows_the_lattice_at_one_phase():
    """scikit-image's brick wall (vertical joints that run on): the tiles are quilted from the wall
    straightened to a whole number of periods per tile, all at one phase, so the joints continue
    across every join. Each tile's column profile (joints: bright columns) correlates with every
    other's (without the phase: about 0.2 on average, some negative)."""
    tileset = make_tileset(Image.fromarray(skimage.data.brick()[:320, :320]), size=TILE, engine="patch", seed=1)
    assert tileset.details["regular"] and tileset.details["period"][1] == pytest.approx(32, abs=1)
    tiles = _tiles(tileset)[..., 0]
    profiles = tiles.mean(axis=1)
    profiles = (profiles - profiles.mean(axis=1, keepdims=True)) / profiles.std(axis=1, keepdims=True)
    correlation = (profiles @ profiles.T / TILE)[np.triu_indices(16, 1)]
    assert correlation.mean() >= 0.8 and correlation.min() >= 0.5, (correlation.mean(), correlation.min())
    assert_shared_edges_identical(_tiles(tileset))
