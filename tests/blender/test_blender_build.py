"""The extension zip: Blender's layout (add-on at the root) with the backend code inside."""

from __future__ import annotations

import zipfile

import pytest
import tomllib

from tests.conftest import ROOT

pytestmark = pytest.mark.blender


def test_zip_holds_the_addon_and_the_backend(extension_zip):
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert extension_zip.name == f"texture_variants-{manifest['version']}.zip"
    with zipfile.ZipFile(extension_zip) as z:
        names = set(z.namelist())
        packaged_manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
    addon = {p.relative_to(ROOT / "blender_addon").as_posix() for p in (ROOT / "blender_addon").rglob("*.py")
             if "__pycache__" not in p.parts}
    backend = {str(p.relative_to(ROOT)) for p in (ROOT / "backend").rglob("*.py") if "__pycache__" not in p.parts}
    assert addon <= names and "connection/client.py" in names and "__init__.py" in names
    assert "generated/params.json" in names  # the backend's declarations, read when the add-on registers
    assert backend <= names and "backend/__main__.py" in names
    assert {"pyproject.toml", "constraints.txt", "blender_manifest.toml"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "."))]
    assert packaged_manifest["id"] == "texture_variants" and packaged_manifest["type"] == "add-on"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert packaged_manifest["version"] == pyproject["project"]["version"]
