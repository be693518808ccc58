"""In real Blender: Generate for Selected on three materials (patch engine, the real backend) gives each
material its own result set, from its own texture; Apply works on one of them; a material without an
image texture is reported by name while the others get their variants, and nothing is applied."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.blender.conftest import run_scenario
from tests.conftest import _skimage_texture

pytestmark = pytest.mark.blender

TINTS = {"brick": (0.85, 0.45, 0.3), "grass": (0.3, 0.75, 0.25), "gravel": (0.45, 0.5, 0.8)}
MATERIALS = ["Brick Material", "Grass Material", "Gravel Material"]


def tinted_textures(folder) -> list:
    """scikit-image's CC0 brick, grass and gravel at 128 px, each tinted apart so their colours tell them apart."""
    paths = []
    for name, tint in TINTS.items():
        gray = np.asarray(_skimage_texture(name, 128).convert("L"), dtype=np.float32) / 255.0
        rgb = np.stack([gray * t for t in tint], axis=-1)
        path = folder / f"{name}.png"
        Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def batch(tmp_path_factory, blender):
    workdir = tmp_path_factory.mktemp("batch")
    return run_scenario("scenario_batch", workdir, blender, *tinted_textures(workdir))


def test_three_materials_get_three_result_sets_each_in_its_own_history(batch):
    assert batch["batch"] == {"result": ["FINISHED"], "error": None}
    assert batch["batch_unchanged"]  # generating changes no material
    histories = batch["histories"]
    assert sorted(histories) == MATERIALS
    for material, sets in histories.items():
        [only] = sets  # one new set, in this material's history
        assert only["source"] == batch["sources"][material]["image"] and only["node"] == "Texture"
        assert only["engine"] == "patch" and len(only["variants"]) == 2
        assert all(v["size"] == [64, 64] for v in only["variants"])
    seeds = [v["seed"] for m in MATERIALS for v in histories[m][0]["variants"]]
    assert seeds == [3, 4, 5, 6, 7, 8]  # a distinct seed per job from the scene's seed
    assert batch["seed_after"] == 3
    assert batch["outcomes"] == [[m, True, "2 variants"] for m in MATERIALS]
    assert batch["current"] == "Brick Material"  # the active object's material's variants are shown


def test_each_result_set_is_made_from_its_own_texture(batch):
    sources = {m: np.array(batch["sources"][m]["mean"]) for m in MATERIALS}
    for material in MATERIALS:
        for variant in batch["histories"][material][0]["variants"]:
            mean = np.array(variant["mean"])
            closest = min(MATERIALS, key=lambda m: np.abs(sources[m] - mean).sum())
            assert closest == material and np.abs(sources[material] - mean).max() < 0.05, (material, mean)


def test_the_manifest_has_a_job_per_material_with_the_scenes_settings(batch):
    manifest = batch["manifest"]
    assert [line["output_dir"] for line in manifest] == ["01-Brick_Material", "02-Grass_Material",
                                                          "03-Gravel_Material"]
    for line in manifest:
        assert line["input"].startswith(line["output_dir"] + "/reference-")  # relative to the manifest
        assert (line["engine"], line["variants"], line["size"], line["tile"]) == ("patch", 2, [64, 64], "both")
    assert [line["seed"] for line in manifest] == [3, 5, 7]
    assert [sorted(line.get("maps", {})) for line in manifest] == [[], ["roughness"], []]  # the Grass map travels
    assert manifest[1]["maps"]["roughness"].startswith("02-Grass_Material/map-roughness-")
    # the batch's folder: a job folder per material and the manifest, marked finished (clean-up may take it)
    assert batch["manifest_folder_files"] == [".finished", "01-Brick_Material", "02-Grass_Material",
                                              "03-Gravel_Material", "manifest.jsonl"]


def test_another_objects_material_shows_its_variants_and_apply_works(batch):
    offered = [tuple(call) for call in batch["panel_other_material"]]
    # the History section's Use button, and the panel's own "Show the Variants of Grass Material"
    assert offered.count(("operator", "texture_variants.use_result_set")) == 2
    assert ("operator", "texture_variants.generate_selected") in offered
    assert ("label", "Last Batch: 3 of 3 materials") in offered
    assert batch["use_grass"]["error"] is None and batch["apply_grass"]["error"] is None
    grass = batch["histories"]["Grass Material"][0]["variants"][1]["image"]
    assert batch["base_colors_after_apply"] == {"Brick Material": batch["sources"]["Brick Material"]["image"],
                                                "Grass Material": grass,
                                                "Gravel Material": batch["sources"]["Gravel Material"]["image"]}
    assert batch["invariant_after_apply"] == []
    # the Grass material's roughness map was varied with its base colour and is applied with it
    for material in MATERIALS:
        maps = [sorted(v["maps"]) for v in batch["histories"][material][0]["variants"]]
        assert maps == ([["roughness"]] * 2 if material == "Grass Material" else [[]] * 2), material
    roughness = batch["histories"]["Grass Material"][0]["variants"][1]["maps"]["roughness"]
    assert batch["roughness_after_apply"] == roughness != batch["roughness_source"]
    after = [tuple(call) for call in batch["panel_after_apply"]]
    assert after.count(("operator", "texture_variants.use_result_set")) == 1  # the shown set is this material's


def test_a_material_without_an_image_texture_is_reported_and_the_others_get_theirs(batch):
    assert batch["partial"] == {"result": ["FINISHED"], "error": None}
    assert batch["partial_unchanged"] and batch["partial_applied"] == [False, False, False]
    assert batch["partial_histories"] == {"Brick Material": 1, "Grass Material": 1, "Plain Material": 0}
    for material in ("Brick Material", "Grass Material"):
        assert batch["partial_sources"][material] == batch["partial_textures"][material]
    [plain] = [o for o in batch["partial_outcomes"] if o[0] == "Plain Material"]
    assert plain[1] is False and "no Image Texture node" in plain[2] and "To fix:" in plain[2]
    assert [o[1] for o in batch["partial_outcomes"] if o[0] != "Plain Material"] == [True, True]
    assert len(batch["partial_manifest"]) == 2  # no job for the material without a texture


def test_nothing_to_vary_is_an_error_that_names_why(batch):
    assert "No material to vary" in batch["nothing_to_vary"]["error"]
    assert "Plain Material" in batch["nothing_to_vary"]["error"]
    assert "No object is selected" in batch["nothing_selected"]["error"]
