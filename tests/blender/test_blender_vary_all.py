"""In real Blender: scripts/blender_vary_all.py, the headless recipe for render farms, varies and bakes
every material of a saved .blend and writes a new .blend; the opened .blend and the textures stay as
they were, and an existing output is never overwritten."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.blender.conftest import run_scenario
from tests.blender.test_blender_batch import tinted_textures

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def vary_all(tmp_path_factory, blender):
    workdir = tmp_path_factory.mktemp("vary_all")
    return run_scenario("scenario_vary_all", workdir, blender, *tinted_textures(workdir)[:2]), workdir


def test_every_material_is_varied_baked_and_saved_in_a_new_blend(vary_all):
    data, workdir = vary_all
    assert data["exit"] == 0
    saved = data["saved"]
    assert sorted(saved) == ["Brick Material", "Grass Material"]
    for name, stem in (("Brick Material", "brick"), ("Grass Material", "grass")):
        material = saved[name]
        assert material["filepath"].startswith("//textures/") and material["exists"] and not material["packed"]
        assert material["size"] == [64, 64] and material["history"] == 1
        assert material["original"] == f"//maps/{stem}.png"  # Revert still finds the original texture
        baked = workdir / "project" / material["filepath"][2:]
        with Image.open(baked) as image:
            assert image.size == (64, 64)
    assert "file-variants.blend" in data["project_files"]
    assert len([f for f in data["project_files"] if f.startswith("textures/")]) == 2


def test_the_opened_blend_and_the_textures_are_unchanged_and_nothing_is_overwritten(vary_all):
    data, _ = vary_all
    assert data["originals_unchanged"] == {"file.blend": True, "maps/brick.png": True, "maps/grass.png": True}
    assert data["again"] == 2
