"""In real Blender: the whole workflow on a texture file, diffusion engine on the tiny test models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from tests.blender.conftest import run_scenario, tiny_model_env

pytestmark = pytest.mark.blender

OPERATORS = ["add_mask_point", "add_missing_maps", "apply_variant", "bake", "bake_tile_layout", "cancel",
             "cancel_setup", "check_backend", "clean_up_jobs", "clear_mask_points", "compare", "download_model", "generate",
             "generate_all", "generate_selected", "make_guide", "make_tile_set", "make_tileable", "new_mask",
             "pick_node", "remove_backend", "restyle", "revert", "setup_backend", "sort_results",
             "tile_preview", "tiling_preview", "upscale", "use_result_set", "use_tile_set"]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, blender, tiny_models, color_texture_path):
    workdir = tmp_path_factory.mktemp("workflow")
    before = hashlib.sha256(color_texture_path.read_bytes()).hexdigest()
    data = run_scenario("scenario_workflow", workdir, blender, color_texture_path,
                        env=tiny_model_env(tiny_models))
    assert hashlib.sha256(color_texture_path.read_bytes()).hexdigest() == before
    return data, workdir


def test_installs_with_the_public_operators_panels_and_preferences(workflow, request):
    data, _ = workflow
    assert data["blender_version"].startswith(request.node.callspec.params["blender"])
    assert data["operators"] == OPERATORS
    assert data["panel_spaces"] == ["NODE_EDITOR", "VIEW_3D"]
    for name in ("apply_variant", "bake", "generate", "revert"):
        assert data["operator_options"][name] == ["REGISTER", "UNDO"]
    assert data["preferences_idname"] == "bl_ext.user_default.texture_variants"


def test_generate_makes_variants_of_the_requested_size(workflow):
    data, _ = workflow
    assert data["generate"] == {"result": ["FINISHED"], "error": None}
    results = data["results"]
    assert [r["seed"] for r in results] == [7, 8] and {r["engine"] for r in results} == {"diffusion"}
    for r in results:
        assert r["size"] == [64, 64] and r["job_folder_inside_user_dir"]
        with Image.open(r["path"]) as image:
            assert image.size == (64, 64)
    assert data["base_color_after_generate"] == "gravel.png"  # generating changes no material
    # one folder per job: the add-on made it (with the reference copy), the backend wrote the variants into it
    [folder] = data["job_folders"]
    assert all(Path(folder) in Path(r["path"]).parents for r in results)
    assert any(p.is_file() and p.name.startswith("reference") for p in Path(folder).iterdir())


def test_apply_then_revert_swaps_the_base_color_image(workflow):
    data, _ = workflow
    assert data["apply"]["error"] is None and data["revert"]["error"] is None
    assert data["base_color_after_apply"] == data["results"][1]["image"]
    assert data["original_kept"]  # a fake user keeps the original in the .blend while unused
    assert data["base_color_after_revert"] == "gravel.png"
    assert data["original_fake_user_after_revert"] is False  # as it was before


def test_bake_writes_new_pngs_next_to_the_blend_and_never_overwrites(workflow):
    data, workdir = workflow
    assert data["bake"]["error"] is None and data["bake_again"]["error"] is None
    project = workdir / "project"
    baked = Path(data["baked_image"]["abspath"])
    again = Path(data["baked_again"]["abspath"])
    assert baked.parent == again.parent == project / "textures"
    assert baked != again and data["first_bake_unchanged"]
    assert data["baked_image"]["filepath"].startswith("//textures/")  # relative to the .blend
    assert not data["baked_image"]["packed"] and data["baked_again"]["packed"]
    assert data["textures_folder"] == sorted([baked.name, again.name])
    with Image.open(baked) as image, Image.open(data["results"][0]["path"]) as variant:
        assert image.format == "PNG" and image.tobytes() == variant.tobytes()
    assert data["base_color_after_bake"] == data["results"][0]["image"]
    assert data["original_hash_unchanged"]
    assert data["project_files"] == sorted(["maps/gravel.png", "scene.blend", f"textures/{baked.name}",
                                            f"textures/{again.name}"])


def test_tile_preview_is_the_variant_three_by_three(workflow):
    data, _ = workflow
    assert data["tile_preview"]["error"] is None
    assert data["tiled_size"] == [192, 192] and data["tiled_matches"]


def test_unregister_leaves_nothing_behind(workflow):
    data, _ = workflow
    assert data["backend_pid"]  # the backend ran ...
    assert data["after_disable"] == {"operators": [], "types": [], "scene_property": False,
                                     "material_property": False, "process_alive": False}  # ... and is gone


def _calls(data, key):
    return [tuple(call) for call in data[key]]


def test_panel_draws_settings_results_and_progress(workflow):
    data, _ = workflow
    idle = _calls(data, "panel_with_results")
    # every layout call was checked against Blender's UILayout RNA (harness.CheckingLayout)
    for prop in ("engine", "variants", "seed", "steps", "size", "tile", "appearance", "style_only", "suppress_content"):
        assert ("prop", prop) in idle
    balance = idle.index(("label", "Structure ⟷ Appearance"))  # the slider's ends, then its meaning in words
    after = [call for call in idle[balance + 1:] if call[0] != "row"]
    assert after[0] == ("prop", "balance") and after[1][0] == "label"
    assert ("operator", "texture_variants.generate") in idle and ("template_list", "") in idle
    # History rows say the kind of set and its key settings, not only "diffusion · seed 3"
    assert any(kind == "label" and " · diffusion variants · balance 0.50 · kv · seed " in text for kind, text in idle)
    assert ("operator", "texture_variants.revert") not in idle
    applied = _calls(data, "panel_with_applied_variant")
    assert {("operator", "texture_variants.revert"), ("operator", "texture_variants.bake")} <= set(applied)
    running = _calls(data, "panel_while_running")
    assert ("progress", "Step 3/12 · 0:05 left") in running
    assert ("operator", "texture_variants.cancel") in running
    assert ("operator", "texture_variants.generate") not in running


@pytest.mark.parametrize("key", ["labels_with_results", "labels_with_applied_variant", "preferences_labels"])
def test_no_two_controls_read_the_same(workflow, key):
    """Every section unfolded: a text on a button or field names one setting or one action."""
    data, _ = workflow
    meanings = {}
    for kind, what, text in data[key]:
        if text:
            meanings.setdefault(text, set()).add((kind, what))
    assert len(meanings) > 10
    assert {text: sorted(m) for text, m in meanings.items() if len(m) > 1} == {}


def test_preferences_offer_setup_and_say_what_overrides_them(workflow):
    data, _ = workflow
    prefs = _calls(data, "preferences_panel")
    for prop in ("python", "base", "ip_adapter", "device", "bake_folder", "lgp", "controlnet", "sam", "fast_lora"):
        assert ("prop", prop) in prefs
    downloads = [i for i, call in enumerate(prefs) if call == ("operator", "texture_variants.download_model")]
    assert len(downloads) == 5 and all(prefs[i - 1][0] == "prop" for i in downloads)  # beside each model field
    assert ("operator", "texture_variants.setup_backend") in prefs
    assert ("operator", "texture_variants.check_backend") in prefs
    for prop in ("installer", "torch_index", "package_index"):
        assert ("prop", prop) in prefs
    labels = [text for kind, text in prefs if kind == "label"]
    assert "Torch: CPU build: chosen in Device (works on every computer; diffusion is slow)" in labels
    assert any(text.startswith("Needs about 3 GB free; ") for text in labels)
    assert any(kind == "label" and text.startswith("Overridden by the environment: TEXTURE_VARIANTS_PYTHON")
               for kind, text in prefs)


def test_live_preview_reuses_one_image(workflow):
    data, _ = workflow
    first, second = data["live_previews"]
    assert [first[0], second[0]] == [r["path"] for r in data["results"]]
    assert first[1] == second[1] == [64, 64]
    assert first[2] == second[2] and data["preview_images"] == 1  # reloaded in place, not piled up


def test_check_backend_shows_the_hello_status_line(workflow):
    data, _ = workflow
    assert data["check_backend"] == {"result": ["FINISHED"], "error": None}
    status = data["backend_status"]
    assert status.startswith("Backend 0.1.0") and "engines: " in status and "patch" in status
    assert "device CPU" in status or "device cpu" in status  # found after hello, once torch has loaded
    assert "diffusion" in status  # the tiny models given by TEXTURE_VARIANTS_BASE / _IP_ADAPTER are found


def test_settings_results_and_original_survive_save_and_reopen(workflow):
    data, _ = workflow
    reopened = data["reopened"]
    assert reopened["settings"] == ["diffusion", 2, 2, 64, 7, False]
    assert reopened["results"] == [r["image"] for r in data["results"]]
    assert reopened["base_color"] == data["results"][1]["image"]
    assert reopened["revert"]["error"] is None  # the original was saved in the .blend while unused
    assert reopened["base_color_after_revert"] == "gravel.png" and reopened["original_file"]
