"""In real Blender: every error leaves the material unchanged and says what to do."""

from __future__ import annotations

import sys

import pytest

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender

# Relays to the real backend service and dies (exit code 3) when the first generate request comes.
CRASHING_PYTHON = f"""#!{sys.executable}
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]], stdin=subprocess.PIPE)
for line in sys.stdin.buffer:
    if b'"generate"' in line:
        child.kill()
        os._exit(3)
    child.stdin.write(line)
    child.stdin.flush()
"""


@pytest.fixture(scope="module")
def errors(tmp_path_factory, blender, tiny_models, color_texture_path):
    workdir = tmp_path_factory.mktemp("errors")
    crashing = workdir / "crashing_python"
    crashing.write_text(CRASHING_PYTHON)
    crashing.chmod(0o755)
    return run_scenario("scenario_errors", workdir, blender, color_texture_path,
                        env={"CRASHING_PYTHON": str(crashing), "TINY_BASE": str(tiny_models["base"]),
                             "TEXTURE_VARIANTS_IP_ADAPTER": str(tiny_models["ip_adapter"])})


# case -> words the message must contain (what went wrong, and what to do)
EXPECTED = {
    "no_object": ["No active object", "select the object"],
    "no_material": ["has no material", "add a material"],
    "no_image": ["no Image Texture node", "add an Image Texture node"],
    "image_missing": ["missing", "soon_gone.png", "Find Missing Files"],
    "apply_without_results": ["No variant is picked", "Generate Variant"],
    "revert_without_variant": ["No variant is applied", "apply a variant first"],
    "bake_without_variant": ["No variant is applied", "click Apply, then Bake"],
    "not_set_up": ["no-such-venv", "Set up backend"],
    "backend_crashed": ["exited with code 3", "restarted on the next request"],
    "models_missing": ["no-such-model", "To fix"],
    "cancelled": ["cancelled", "the material was not changed"],
    "setup_offline": ["Online access is off", "Preferences > System > Network"],
    "download_offline": ["Online access is off", "download-models --sam"],
    "bake_unsaved": ["has not been saved", "save the .blend file first"],
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_error_says_what_to_do_and_changes_nothing(errors, case):
    outcome = errors[case]
    assert outcome["result"] is None, f"{case} should have failed: {outcome}"
    for words in EXPECTED[case]:
        assert words in outcome["error"], (case, outcome["error"])
    assert "To fix:" in outcome["error"]
    assert outcome["unchanged"], f"{case} changed the material or the images"


def test_the_panel_says_the_file_is_missing_before_generate(errors):
    labels = [text for kind, text in errors["panel_missing"] if kind == "label"]
    first = labels.index("soon_gone.png: its file is missing")
    said = " ".join(labels[first + 1:first + 6])  # the path and what to do, wrapped over a few lines
    assert "soon_gone.png" in said and "Find Missing Files" in said


def test_errors_touch_no_file(errors):
    assert errors["source_unchanged"]
    assert errors["setup_offline"]["venv_created"] is False and errors["online_access"] is False
    assert errors["apply_for_bake"]["error"] is None
    assert errors["job_folders_left"] == []  # failed and cancelled jobs leave no job folder behind
    assert errors["seed_after_cancel"] == 1  # only a finished job stores its (randomised) seed
    assert errors["workdir_files"] == sorted(["blender-user", "crashing_python", "gravel.png", "variant.png"])
