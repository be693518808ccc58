"""End to end in real Blender: Set up Backend from a fresh user folder, against the package index
this machine's installer is configured with (`default`), then Check Backend and Generate (patch).

Slow (it installs torch and the backend's packages) and needs the package index, so the default
test run leaves it out; run it with:  scripts/test -m slow tests/blender/test_blender_setup.py
"""

from __future__ import annotations

import pytest
from PIL import Image

from tests.blender.conftest import BLENDERS, run_scenario
from tests.conftest import ROOT

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.fixture(scope="module", params=[("4.5", "uv"), ("5.0", "uv"), ("4.5", "pip")], ids="-".join)
def set_up(request, tmp_path_factory, extension_zip, color_texture_path):
    version, installer = request.param
    python = BLENDERS[version]
    if not python.exists():
        pytest.fail(f"bpy {version} is not installed: run scripts/setup --blender")
    workdir = tmp_path_factory.mktemp(f"setup-{version}-{installer}")
    data = run_scenario("scenario_setup", workdir, (python, extension_zip), color_texture_path, installer,
                        env={"TEXTURE_VARIANTS_PYTHON": "", "TEXTURE_VARIANTS_DEVICE": "cpu",
                             "TEXTURE_VARIANTS_TORCH_INDEX": "default", "TEXTURE_VARIANTS_INDEX": "default"},
                        timeout=1200)
    print(f"\nSet up Backend on Blender {version} with {installer}: {data.get('setup_seconds')} s")
    return data, installer


def test_set_up_backend_installs_the_cpu_build_from_the_configured_index(set_up):
    data, installer = set_up
    assert data["venv_before"] is False
    assert data["setup"] == {"result": ["FINISHED"], "error": None}, data["log"][-3000:]
    state = data["state"]
    assert state["installer"] == installer and state["kind"] == "cpu"
    assert state["build"] == "CPU build: chosen in Device (works on every computer; diffusion is slow)"
    assert state["indexes"] == ("torch from the installer's configured index, "
                                "the rest from the installer's configured index")
    pinned = [line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.startswith("torch==")][0]
    log = data["log"]
    assert "--index-url" not in log  # `default`: the installer's own configuration
    assert f"torch=={pinned}+cpu" in log or f"torch-{pinned}+cpu" in log  # the CPU build
    assert "backend-venv.partial" in log and data["user_folder"] == ["backend-venv", "setup.log"]
    assert data["backend_python"] == data["venv_python"]


def test_check_backend_ran_by_itself_and_the_panel_shows_its_summary(set_up):
    data, installer = set_up
    status = data["status_after_setup"]  # describe_hello of what the new environment's backend said
    assert status.startswith("Backend 0.1.0 · device cpu") and "patch" in status.split("engines: ")[1]
    before, after = ([tuple(call) for call in data[key]] for key in ("panel_before", "panel_after"))
    assert ("operator", "texture_variants.setup_backend") in before
    assert any(f == "label" and t.startswith("Needs about 3 GB free; ") for f, t in before)
    assert ("label", "Torch: CPU build: chosen in Device (works on every computer; diffusion is slow)") in before
    assert ("operator", "texture_variants.remove_backend") in after  # and Repair (the same operator)
    assert any(f == "label" and t.startswith("Installed ") and f"with {installer}: CPU build" in t
               for f, t in after)


def test_generate_works_on_the_patch_engine_with_that_environment(set_up):
    data, _ = set_up
    assert data["generate"] == {"result": ["FINISHED"], "error": None}
    assert [r["engine"] for r in data["results"]] == ["patch"]
    with Image.open(data["results"][0]["path"]) as image:
        assert image.size == (64, 64) and data["results"][0]["size"] == [64, 64]


def test_set_up_again_has_nothing_to_do_and_remove_backend_deletes_it(set_up):
    data, _ = set_up
    assert data["setup_again"] == {"result": ["FINISHED"], "error": None}
    assert data["setup_again_seconds"] < 60  # a check of the environment, not a new one
    assert data["remove"] == {"result": ["FINISHED"], "error": None}
    assert not [name for name in data["after_remove"] if name.startswith("backend-venv")]
    assert "setup.log" in data["after_remove"] and data["status_after_remove"] == "Backend removed"
