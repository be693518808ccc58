"""In real Blender: A/B compare without Apply (the variant with its maps, the original, another pick),
stopped with the node tree exactly as before, kept through save and reopen, and ended by Apply."""

from __future__ import annotations

import pytest

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def compared(tmp_path_factory, blender, color_texture_path):
    return run_scenario("scenario_compare", tmp_path_factory.mktemp("compare"), blender, color_texture_path)


def test_the_variant_and_its_map_show_without_changing_the_nodes(compared):
    assert compared["generate"]["error"] is None and compared["variant"]["error"] is None
    first, second = compared["variants"]
    assert compared["shown_variant"] == {"Base Color": first["image"], "Roughness": first["maps"]["roughness"]}
    assert compared["node_images_while_comparing"] == {"Texture": compared["shown_before"]["Base Color"],
                                                       "Roughness": compared["shown_before"]["Roughness"]}
    assert compared["shown_original"] == compared["shown_before"]
    assert compared["shown_variant_2"] == {"Base Color": second["image"], "Roughness": second["maps"]["roughness"]}
    assert compared["shown_reopened"] == compared["shown_variant_2"]


def test_stop_puts_the_tree_back_exactly(compared):
    assert "is not being compared" in compared["stop_unstarted"]["error"]
    assert compared["stop"]["error"] is None and compared["restored"]
    assert compared["shown_stopped"] == compared["shown_before"]


def test_apply_while_comparing_ends_compare_and_applies(compared):
    assert compared["apply"]["error"] is None and not compared["compare_after_apply"]
    assert compared["shown_applied"] == {"Base Color": compared["variants"][1]["image"],
                                         "Roughness": compared["variants"][1]["maps"]["roughness"]}
    assert not [name for name in compared["nodes_after_apply"] if name.startswith("Image Texture")]
    assert compared["invariant"] == []
