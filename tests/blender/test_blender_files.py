"""In real Blender: variants keep the source's depth, colour space and brightness, live next to the
.blend (or packed), saving with job-folder files warns, clean-up keeps what it must."""

from __future__ import annotations

import pytest

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def files(tmp_path_factory, blender, color_texture_path):
    workdir = tmp_path_factory.mktemp("files")
    return run_scenario("scenario_files", workdir, blender, color_texture_path)


def test_an_exr_source_gives_an_exr_variant_with_its_brightness(files):
    exr = files["exr"]
    assert exr["error"] is None and exr["format"] == "OPEN_EXR" and exr["file"].endswith(".exr")
    (space, is_float, mean, brightest), (v_space, v_float, v_mean, v_brightest) = exr["source"], exr["variant"]
    assert v_space == space and space.startswith("Linear") and is_float and v_float
    assert abs(v_mean - mean) <= 0.05 * mean, (mean, v_mean)  # linear mean within 5 %
    assert brightest > 1.5 and v_brightest > 1.5  # values above 1 survive


def test_a_16_bit_png_source_gives_a_16_bit_variant(files):
    deep = files["png16"]
    assert deep["error"] is None and deep["png_depth"] == 16
    (space, _, mean, _), (v_space, v_float, v_mean, _) = deep["source"], deep["variant"]
    assert v_space == space == "sRGB" and v_float
    assert abs(v_mean - mean) <= 0.05 * mean


def test_a_patch_result_set_says_what_the_engine_found_in_the_texture(files):
    assert files["png16"]["expectation"].startswith("Found an irregular texture")  # the tinted gravel: irregular
    assert "irregular texture" in files["png16"]["expectation"]


def test_variants_are_packed_in_an_unsaved_blend_and_written_next_to_a_saved_one(files):
    assert files["unsaved_generate"]["error"] is None and files["unsaved_packed"] == [True]
    assert files["saved_generate"]["error"] is None
    [(path, on_disk, exists)] = files["saved_files"]
    assert path.startswith("//variants/") and on_disk and exists
    assert [f for f in files["project_files"] if f.startswith("variants/")] == [path[2:]]


def test_saving_with_a_file_in_a_job_folder_warns(files):
    assert files["save_warnings_clean"] == []
    warning = " ".join(files["save_warnings_job_file"])
    assert "job folder" in warning and "To fix" in warning


def test_clean_up_removes_only_finished_job_folders_past_the_limit(files):
    assert files["clean_up"]["error"] is None
    assert files["clean_up_removed"] == ["old-finished"]
    assert files["clean_up_kept"] == {"old-finished": False, "new-finished": True, "old-running": True,
                                      "in_use": True}


def test_original_files_are_untouched(files):
    assert files["originals_unchanged"]
