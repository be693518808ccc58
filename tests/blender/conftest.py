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

BLENDER_PYTHON = ROOT / ".venv-blender" / "bin" / "python"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def extension_zip() -> Path:
    """dist/texture_variants-<version>.zip, built (and validated by Blender) once per test session."""
    if not BLENDER_PYTHON.exists():
        pytest.fail("the bpy wheel is not installed: run scripts/setup --blender")
    out = subprocess.run([str(ROOT / "scripts" / "build_extension")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return ROOT / out.stdout.strip().splitlines()[-1]


def run_scenario(name: str, workdir: Path, zip_path: Path, *extra, env: dict | None = None,
                 timeout: float = 600) -> dict:
    """Run tests/blender/<name>.py in a fresh headless Blender; return what it recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name}.json"
    user = workdir / "blender-user"
    user.mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTURE_VARIANTS_")}
    full_env.update({"BLENDER_USER_RESOURCES": str(user), "TEXTURE_VARIANTS_PYTHON": sys.executable,
                     "TEXTURE_VARIANTS_DEVICE": "cpu", **(env or {})})
    proc = subprocess.run([str(BLENDER_PYTHON), str(HERE / f"{name}.py"), str(out), str(zip_path), str(workdir),
                           *map(str, extra)], env=full_env, capture_output=True, text=True, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() else {}
    log = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0 and "crash" not in data, data.get("crash", "") + log
    return data
