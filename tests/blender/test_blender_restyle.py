"""In real Blender: the Restyle section on the tiny test models (a restyle of an applied variant,
a painted mask, Segment Anything points placed by script, errors, Apply / Bake / Revert)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.blender.conftest import run_scenario, tiny_model_env

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def restyled(tmp_path_factory, blender, tiny_models, color_texture_path):
    workdir = tmp_path_factory.mktemp("restyle")
    return run_scenario("scenario_restyle", workdir, blender, color_texture_path,
                        env=tiny_model_env(tiny_models, "sam"))


def test_restyle_joins_the_results_and_works_on_the_applied_variant(restyled):
    assert restyled["generate"]["error"] is None and restyled["restyle_whole"] == {"result": ["FINISHED"],
                                                                                   "error": None}
    results = restyled["results_after_whole"]
    assert [r["engine"] for r in results] == ["diffusion", "diffusion", "restyle"]  # joined, not replaced
    assert restyled["picked_after_whole"] == 2 and results[2]["size"] == results[1]["size"]  # the input's size
    assert Path(results[2]["path"]).name.startswith("reference-") and "-restyle-s" in Path(results[2]["path"]).name
    assert restyled["restyle_input"] == results[1]["image"]  # the applied variant was the input


def test_a_painted_mask_in_edit_inside_mode_keeps_the_unmasked_half(restyled):
    assert restyled["new_mask"]["error"] is None
    # New Mask: the size of what is restyled (the applied variant, at its source's size)
    assert restyled["mask"]["size"] == restyled["results_after_whole"][1]["size"]
    assert restyled["mask"]["source"] == "image"
    assert restyled["restyle_masked"]["error"] is None
    result = restyled["results_after_masked"][-1]
    mask_file = Path(result["path"]).with_name(Path(result["path"]).stem + "-mask.png")
    mask = np.asarray(Image.open(mask_file))
    n = mask.shape[0]  # the output's side
    assert mask[: n // 2].min() == 255 and mask[n // 2 + 1:].max() == 0  # painted top half (rows from the top)
    # the input is the texture as the add-on exported it into the job folder (the applied variant)
    folders = (Path(result["path"]).parent, Path(result["path"]).parent.parent)  # the job folder, or its parent
    [reference] = [f for folder in folders for f in folder.glob("reference-*.png") if "-restyle-" not in f.name]
    assert "variant" in reference.name
    original = np.asarray(Image.open(reference).convert("RGB"))
    restyled_pixels = np.asarray(Image.open(result["path"]).convert("RGB"))
    # far from the mask (it wraps: the bottom row borders its top row when tiled), the input's pixels
    far = slice(n // 2 + n // 8, n - n // 8)
    assert np.array_equal(restyled_pixels[far], original[far])
    assert not np.array_equal(restyled_pixels[: n // 3], original[: n // 3])  # inside it, restyled
    props = [call[1] for call in restyled["panel_image_mask"] if call[0] == "prop"]
    assert {"restyle_prompt", "restyle_strength", "mask_source", "mask_image", "mask_mode"} <= set(props)
    assert ["operator", "texture_variants.new_mask"] in restyled["panel_image_mask"]


def test_points_from_the_2d_cursor_or_a_script_go_to_segment_anything(restyled):
    assert "Image Editor" in restyled["point_without_editor"]["error"]  # headless: no editor to read
    assert restyled["points"] == [[0.25, 0.75, False], [pytest.approx(0.8), pytest.approx(0.2), True]]
    assert restyled["restyle_points"]["error"] is None
    result = restyled["results_after_points"][-1]
    assert Path(result["path"]).with_name(Path(result["path"]).stem + "-mask.png").is_file()
    calls = restyled["panel_points"]
    assert ["operator", "texture_variants.add_mask_point"] in calls
    assert ["operator", "texture_variants.clear_mask_points"] in calls
    assert restyled["points_after_clear"] == 0
    assert "no point is placed" in restyled["no_points"]["error"]
    assert "needs a prompt" in restyled["no_prompt"]["error"]


def test_the_start_setting_reaches_the_backend(restyled):
    def start(result):
        with Image.open(result["path"]) as image:
            return json.loads(image.text["parameters"])["restyle_start"]

    assert start(restyled["results_after_whole"][-1]) == "inverted"  # the default: the method's own start
    assert start(restyled["results_after_masked"][-1]) == "noise"
    assert ["prop", "restyle_start"] in restyled["panel_image_mask"]


def test_a_restyle_of_a_pbr_set_carries_its_maps_and_applies_them(restyled):
    assert list(restyled["restyle_whole_maps"]) == ["roughness"]
    assert list(restyled["restyled_maps"]) == ["roughness"]
    assert restyled["roughness_after_apply"] == restyled["restyled_maps"]["roughness"]  # not the variant's any more
    assert "restyle" in restyled["roughness_after_apply"]


def test_apply_bake_and_revert_work_on_a_restyled_result(restyled):
    assert restyled["revert_variant"]["error"] is None and restyled["apply_restyled"]["error"] is None
    assert restyled["base_color_after_apply"] == restyled["results_after_points"][-1]["image"]
    assert restyled["bake"]["error"] is None and len(restyled["textures_folder"]) == 2  # colour + roughness
    assert restyled["revert"]["error"] is None and restyled["base_color_after_revert"] == "gravel_color.png"
    assert {"restyle", "new_mask", "add_mask_point", "clear_mask_points"} <= set(restyled["operators"])
