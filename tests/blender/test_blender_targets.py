"""In real Blender: refusals that change nothing (linked and overridden materials, results of another
material), the explicit ways past them (a local copy, Apply to This Material), per-object apply,
finding the texture, the node picker, Match Source and the history."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def targets(tmp_path_factory, blender, color_texture_path):
    workdir = tmp_path_factory.mktemp("targets")
    gravel = np.asarray(Image.open(color_texture_path))
    wide = workdir / "wide.png"
    Image.fromarray(np.tile(gravel, (3, 8, 1))[:384, :1024]).save(wide)
    return run_scenario("scenario_targets", workdir, blender, color_texture_path, env={"WIDE_TEXTURE": str(wide)})


def _refused(outcome, *words):
    assert outcome["result"] is None and outcome["unchanged"], outcome
    for word in words:
        assert word in outcome["error"], outcome["error"]
    assert "To fix:" in outcome["error"] and outcome["invariant"] == []


@pytest.mark.parametrize("case", ["linked_apply", "linked_revert", "linked_bake", "override_apply"])
def test_linked_or_overridden_material_is_refused_and_nothing_changes(targets, case):
    assert targets["linked_generate"]["error"] is None  # reading a linked texture is fine
    _refused(targets[case], "make it local")


def test_a_local_copy_is_made_only_when_asked(targets):
    outcome = targets["linked_local_copy"]
    assert outcome["error"] is None and outcome["invariant"] == []
    name, is_local, shown, linked_shows = outcome["material"]
    assert is_local and name != "LibMat" and shown.startswith("gravel variant")
    assert linked_shows == "gravel.png"  # the library's material is as it was
    assert targets["override_local_copy"]["error"] is None
    assert targets["override_local_copy"]["base_color"].startswith("gravel variant")


def test_results_of_one_material_are_refused_on_another_unless_asked(targets):
    assert targets["binding_generate"]["error"] is None
    _refused(targets["other_material"], "made for 'Brick Material'", "Apply to This Material")
    outcome = targets["to_this_material"]
    assert outcome["error"] is None and outcome["invariant"] == []
    assert "variant" in outcome["base_color"]


def test_apply_to_this_object_only_gives_each_selected_object_its_own_variant(targets):
    outcome = targets["object_only"]
    assert outcome["error"] is None and outcome["invariant"] == []
    walls = {name: (material, image) for name, material, image in outcome["walls"]}
    chosen = [walls[name] for name in ("Brick", "Wall2", "Wall3")]
    assert len({material for material, _ in chosen}) == 3  # a material each ...
    assert [image for _, image in chosen] == outcome["variants"]  # ... with its own variant
    shared_name, shared_image, original = outcome["shared_material"]
    assert walls["Wall4"] == (shared_name, original)  # the unselected wall keeps the shared material ...
    assert shared_image == original  # ... which still shows the original


def test_texture_is_found_through_colour_nodes_and_the_picker_lists_image_nodes(targets):
    assert targets["detect_hue_mix"] == "Texture"  # not the Mix factor's mask
    assert targets["detect_ramp"] == "Texture" and targets["detect_group"] == "Texture"
    assert targets["picker_items"] == ["", "Texture", "Mask"]  # Auto and the image nodes, no BSDF or output
    assert targets["pick_mask"]["error"] is None and targets["after_pick"] == ["Mask", "Mask"]
    assert targets["other_material_choice"] == ["", "Texture"]  # stored per material


def test_match_source_keeps_a_wide_aspect_and_fixed_says_it_does_not(targets):
    assert targets["wide_generate"]["error"] is None
    assert targets["wide_size"] == [1024, 384]
    assert any("aspect differs" in note for note in targets["fixed_notes"])


def test_history_keeps_the_newest_sets_across_generates_and_save_and_reopen(targets):
    history = targets["history"]
    expected = sorted(history["made"], reverse=True)[:history["limit"]]
    assert history["seeds"] == expected  # newest first, the oldest dropped beyond the limit
    assert targets["history_use"]["error"] is None and targets["history_current_seed"] == expected[2]
    assert targets["history_apply"]["error"] is None and targets["history_apply"]["invariant"] == []
    reopened = targets["history_reopened"]
    assert reopened["seeds"] == expected and reopened["images"] and reopened["invariant"] == []
    assert targets["reopened_use"]["error"] is None and targets["reopened_apply"]["invariant"] == []


def test_original_files_are_untouched(targets):
    assert targets["originals_unchanged"]
