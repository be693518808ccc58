"""The Blender panel's settings as properties.py declares them, read in Blender's Python (the bpy wheel,
the add-on imported, not registered), against backend/params.py: every default, range, choice and help
text the panel shows is the backend's."""

from __future__ import annotations

import json
import subprocess

import pytest

from backend.params import MATERIAL_MAPS, DiffusionOptions, GenerationParams, specs
from tests.blender.conftest import BLENDERS
from tests.conftest import ROOT

pytestmark = pytest.mark.blender

DUMP = """
import json, sys
import bpy
from blender_addon import properties
out = {}
for name, prop in properties.TEXTURE_VARIANTS_PG_settings.__annotations__.items():
    kw = {k: v for k, v in getattr(prop, "keywords", {}).items() if k in ("default", "min", "max", "items", "description")}
    if "items" in kw:
        kw["items"] = [item[0] for item in kw["items"]]
    out[name] = kw
out["__maps__"] = [item[0] for item in properties.MAP_ITEMS]
sys.stdout.write("\\nDUMP " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def declared() -> dict:
    python = BLENDERS["4.5"]
    if not python.exists():
        pytest.fail("bpy 4.5 is not installed: run scripts/setup --blender")
    out = subprocess.run([str(python), "-c", DUMP], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.rsplit("\nDUMP ", 1)[1])


def _blender_properties(declared) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """{property: {keyword: value}} of the panel settings and {property: its items' identifiers}."""
    props = {name: dict(kw, items=name) if "items" in kw else kw for name, kw in declared.items()}
    items = {name: kw["items"] for name, kw in declared.items() if "items" in kw}
    return props, items


def test_the_blender_panel_ranges_and_defaults_match_the_backend(declared):
    props, items = _blender_properties(declared)
    for name in ("variants", "steps", "size", "balance", "seed"):
        spec, default = specs(GenerationParams)[name]
        assert props[name]["min"] == spec.low, name
        if name == "size":  # the panel's square side (the add-on caps it lower): valid here, the default's side
            assert props[name]["max"] <= spec.high and spec.check(name, props[name]["default"]) == default
            continue
        if name != "seed":  # the panel's seed is a 32-bit IntProperty: any value of it is valid here
            assert props[name]["max"] == spec.high, name
        assert spec.check(name, props[name]["default"]) == props[name]["default"], name
    for name in ("steps", "balance", "engine", "tile", "appearance"):
        assert props[name]["default"] == specs(GenerationParams)[name][1], name
    for name in ("engine", "tile", "appearance", "sketch_mode"):
        assert tuple(items[props[name]["items"]]) == specs(GenerationParams)[name][0].choices, name
    spec, default = specs(GenerationParams)["sketch_strength"]
    assert (props["sketch_strength"]["min"], props["sketch_strength"]["max"]) == (spec.low, spec.high)
    assert props["sketch_strength"]["default"] == default and props["sketch_mode"]["default"] == "lgp"


def test_restyle_mask_and_map_settings_and_help_texts_are_the_backends(declared):
    props, items = _blender_properties(declared)
    options = specs(DiffusionOptions)
    spec, default = options["restyle_strength"]
    assert (props["restyle_strength"]["min"], props["restyle_strength"]["max"], props["restyle_strength"]["default"]) \
        == (spec.low, spec.high, default)
    assert props["mask_mode"]["default"] == options["mask_mode"][1]
    assert tuple(items["mask_mode"]) == options["mask_mode"][0].choices
    assert tuple(declared["__maps__"]) == MATERIAL_MAPS
    declared_help = {"balance": specs(GenerationParams)["balance"][0], "restyle_strength": spec,
                     "sketch_strength": specs(GenerationParams)["sketch_strength"][0]}
    for name, declaration in declared_help.items():
        assert declaration.hint and props[name]["description"].lower() == declaration.hint.lower(), name
