"""Blender tests: each scenario runs in its own process of the bpy wheel (bpy imports once per
process) against the built extension zip, in an isolated Blender user folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Every Blender test runs on each of these (scripts/setup --blender makes both venvs).
BLENDERS = {"4.5": ROOT / ".venv-blender" / "bin" / "python", "5.0": ROOT / ".venv-blender-5.0" / "bin" / "python"}
HERE = Path(__file__).resolve().parent
# The default run covers every scenario on the LTS (4.5) and these on 5.0 too: the extension's build
# and install, the panel and operators, and the node group whose hash must match Blender's own bit
# for bit. The rest of the 5.0 runs are `slow` (scripts/test -m slow tests/blender runs them all).
ALWAYS_ON_BOTH = {"test_blender_build.py", "test_blender_workflow.py", "test_blender_tile_set.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("blender") == "5.0" and item.path.name not in ALWAYS_ON_BOTH:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def extension_zip() -> Path:
    """dist/texture_variants-<version>.zip, built (and validated by Blender) once per test session."""
    out = subprocess.run([str(ROOT / "scripts" / "build_extension")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return ROOT / out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session", params=sorted(BLENDERS))
def blender(request, extension_zip) -> tuple[Path, Path]:
    """(the Python of a bpy wheel, the extension zip): each Blender test runs once per version."""
    python = BLENDERS[request.param]
    if not python.exists():
        pytest.fail(f"bpy {request.param} is not installed: run scripts/setup --blender")
    return python, extension_zip


def tiny_model_env(tiny_models: dict, *extra: str) -> dict:
    """The environment pointing the add-on's backend at the tiny test models (base and IP-Adapter,
    plus the named extra ones: "lgp", "sam"), as TEXTURE_VARIANTS_<NAME> variables."""
    names = {"base": "BASE", "ip_adapter": "IP_ADAPTER", "lgp": "LGP", "sam": "SAM"}
    return {f"TEXTURE_VARIANTS_{names[key]}": str(tiny_models[key]) for key in ("base", "ip_adapter", *extra)}


def run_scenario(name: str, workdir: Path, blender: tuple[Path, Path], *extra, env: dict | None = None,
                 timeout: float = 600) -> dict:
    """Run tests/blender/<name>.py in a fresh headless Blender; return what it recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name}.json"
    user = workdir / "blender-user"
    user.mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTURE_VARIANTS_")}
    full_env.update({"BLENDER_USER_RESOURCES": str(user), "TEXTURE_VARIANTS_PYTHON": sys.executable,
                     "TEXTURE_VARIANTS_DEVICE": "cpu", **(env or {})})
    python, zip_path = blender
    proc = subprocess.run([str(python), str(HERE / f"{name}.py"), str(out), str(zip_path), str(workdir),
                           *map(str, extra)], env=full_env, capture_output=True, text=True, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() else {}
    log = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0 and "crash" not in data, data.get("crash", "") + log
    return data
