"""In real Blender: the live tiling preview repeats every texture of the material on the object and,
turned off (also after save and reopen), leaves the node tree structurally as it was."""

from __future__ import annotations

import pytest

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def preview(tmp_path_factory, blender, color_texture_path):
    return run_scenario("scenario_tiling_preview", tmp_path_factory.mktemp("tiling"), blender, color_texture_path)


def test_every_texture_is_repeated_while_it_is_on(preview):
    assert preview["on"]["error"] is None
    assert preview["feeds_before"] == {"Texture": ["MAPPING", [2.0, 2.0, 1.0]], "Roughness": None}
    assert preview["feeds_on"] == {"Texture": ["MAPPING", [4.0, 4.0, 1.0]], "Roughness": ["MAPPING", [4.0, 4.0, 1.0]]}
    assert preview["feeds_reopened"] == preview["feeds_on"]  # saved with the file


def test_off_puts_the_node_tree_back_exactly(preview):
    assert preview["off"]["error"] is None
    assert preview["restored"], preview["difference"]
    assert not preview["record_left"]


def test_the_panel_toggle_shows_its_state(preview):
    assert ["operator", "texture_variants.tiling_preview"] in preview["panel_off"]
    assert ["operator", "texture_variants.tiling_preview"] in preview["panel_on"]
