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


def test_every_variant_carries_its_report_card_shown_and_sortable(compared):
    cards = compared["cards"]
    assert len(cards) == 2 and all(card["tiles"] and card["new"] for card in cards)
    assert all(set(card["maps"]) == {"roughness"} for card in cards)  # the map's own card
    assert any(label.startswith("Tiles (seam x") for label in compared["panel_labels"])
    assert "texture_variants.sort_results" in compared["panel_operators"]
    assert all(compared[f"sort_{by}"]["error"] is None for by in ("novelty", "look", "seam"))
    novelty_order = compared["sort_orders"][0]
    by_image = {v: c for v, c in zip(compared["sort_orders"][2], compared["sorted_cards"], strict=True)}
    assert by_image[novelty_order[0]]["novelty"] >= by_image[novelty_order[1]]["novelty"]
