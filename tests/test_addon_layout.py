"""The add-on's layout (scripts/check_imports.py): the folder a module lives in says what it may import."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_imports  # noqa: E402


def _addon(tmp_path, files: dict[str, str]) -> list[str]:
    """The layout violations of an add-on made of `files` ({path under blender_addon/: source})."""
    for name, source in files.items():
        path = tmp_path / "blender_addon" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return check_imports.layer_violations(tmp_path)


def test_the_addon_keeps_its_layout():
    assert check_imports.layer_violations() == []


def test_every_folder_and_top_module_of_the_addon_has_a_layer():
    package = ROOT / "blender_addon"
    units = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in package.glob("*.py")}
    layered = set().union(*check_imports.ADDON_LAYERS)
    assert units == layered
    first_blender = min(i for i, layer in enumerate(check_imports.ADDON_LAYERS) if layer - check_imports.PLAIN)
    # every unit below the first Blender one is plain: a plain unit reaches no bpy through the add-on
    assert set().union(*check_imports.ADDON_LAYERS[:first_blender]) == check_imports.PLAIN


@pytest.mark.parametrize("source", ["import bpy\n", "def f():\n    from mathutils import Vector\n"])
def test_a_plain_folder_that_imports_blender_is_caught(tmp_path, source):
    found = _addon(tmp_path, {"connection/client.py": source})
    assert len(found) == 1 and "connection/ is plain Python" in found[0] and "client.py" in found[0]


def test_a_plain_folder_that_imports_a_blender_module_of_the_addon_is_caught(tmp_path):
    found = _addon(tmp_path, {"pixels/colour.py": "from ..material import texture_io\n",
                              "material/texture_io.py": "import bpy\n"})
    assert found == ["blender_addon/pixels/colour.py:1: pixels must not import material (upward)"]


@pytest.mark.parametrize("source", ["from ..operators import generate\n", "from ..operators.batch import X\n",
                                    "def draw():\n    from ..operators import setup\n"])
def test_drawing_that_imports_operators_is_caught(tmp_path, source):
    found = _addon(tmp_path, {"ui/panel.py": source})
    assert len(found) == 1 and "ui must not import operators (sideways)" in found[0]


def test_drawing_that_defines_or_runs_an_operator_is_caught(tmp_path):
    found = _addon(tmp_path, {"ui/panel.py": "import bpy\n\n\nclass Go(bpy.types.Operator):\n    pass\n\n\n"
                                             "def draw(layout):\n    bpy.ops.texture_variants.generate()\n"})
    assert len(found) == 2
    assert "operator Go belongs in operators/" in found[0] and "runs no operator" in found[1]


@pytest.mark.parametrize(("name", "source", "message"), [
    ("material/results.py", "from ..ui import panel\n", "material must not import ui (upward)"),
    ("prefs.py", "from .operators import setup\n", "prefs must not import operators (upward)"),
    ("errors.py", "from . import paths\n", "errors must not import paths (upward)"),
    ("connection/session.py", "from ..setup import runner\n", "connection must not import setup (sideways)"),
    ("operators/apply.py", "from ..ui import panel\n", "operators must not import ui (sideways)"),
])
def test_an_upward_or_sideways_import_is_caught(tmp_path, name, source, message):
    found = _addon(tmp_path, {name: source})
    assert len(found) == 1 and message in found[0], found


def test_downward_and_own_folder_imports_pass(tmp_path):
    assert _addon(tmp_path, {
        "operators/apply.py": "from . import generate\nfrom ..material import maps\nfrom .. import prefs, paths\n",
        "material/maps.py": "import bpy\nfrom ..pixels import colour\nfrom ..errors import UserError\n",
        "ui/panel.py": "import bpy\nfrom .batch import draw_batch\nfrom ..connection import session\n",
        "__init__.py": "def register():\n    from .operators import apply\n    from .ui import panel\n",
    }) == []


def test_a_module_outside_every_layer_is_caught(tmp_path):
    found = _addon(tmp_path, {"helpers/misc.py": "x = 1\n"})
    assert found == ["blender_addon/helpers/misc.py:1: helpers is in no layer of scripts/check_imports.py "
                     "ADDON_LAYERS"]
