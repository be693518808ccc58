"""backend.params: every default and range is declared once, checked once, and what other parts
show (the service's hello, the CLI, the Blender panel) agrees with it."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import InputError
from backend.params import ENGINE_OPTIONS, DiffusionOptions, GenerationParams, PatchOptions, specs
from backend.service.protocol import START_OPTIONS, generate_parameters
from tests.conftest import ROOT

ALL = {**specs(GenerationParams), **specs(DiffusionOptions)}


def test_every_default_passes_its_own_check():
    for name, (spec, default) in ALL.items():
        assert spec.check(name, default) == default, name


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(n for n, (s, _) in ALL.items() if s.kind in ("int", "number"))),
       outside=st.floats(0.001, 1e6))
def test_values_outside_a_range_are_refused_naming_the_parameter(name, outside):
    spec, _ = ALL[name]
    value = spec.high + outside if spec.kind == "number" else int(spec.high) + 1 + int(outside)
    fields, options = ({name: value}, {}) if name in specs(GenerationParams) else ({"engine": "diffusion"}, {name: value})
    with pytest.raises(InputError, match=name):
        GenerationParams.build(options, **fields)


def test_unknown_options_are_refused_for_every_engine_with_the_known_ones():
    with pytest.raises(InputError, match="patch engine") as e:
        GenerationParams.build({"ad_iterations": 2}, engine="patch")
    assert "structure" in e.value.hint and "ad_iterations" not in e.value.hint
    with pytest.raises(InputError, match="diffusion engine") as e:
        GenerationParams.build({"kv_windw": 0.5}, engine="diffusion")
    assert "kv_window" in e.value.hint
    with pytest.raises(InputError, match="any engine"):
        GenerationParams.build({"seed": 1})
    auto = GenerationParams.build({"ad_iterations": 2}, engine="auto")  # for diffusion, if auto picks it
    assert auto.diffusion.ad_iterations == 2 and auto.patch == PatchOptions()


def test_options_are_typed_and_normalised_once():
    params = GenerationParams.build({"style_blocks": ["up_blocks.1.attentions.1"], "ad_lr": 0.5},
                                    engine="diffusion", balance=1)
    assert params.diffusion.style_blocks == ("up_blocks.1.attentions.1",) and params.diffusion.ad_lr == 0.5
    assert params.validated() == params  # checking again changes nothing
    record = params.to_dict("diffusion")
    assert record["style_blocks"] == ("up_blocks.1.attentions.1",) and "ad_iterations" not in record  # defaults left out


def test_hello_lists_exactly_the_declared_choices_and_options():
    parameters = generate_parameters()
    # less the start options (allow_pickle: `serve --allow-pickle`), which a request may not set
    assert parameters["extra"] == {engine: [name for name in specs(cls) if name not in START_OPTIONS]
                                   for engine, cls in ENGINE_OPTIONS.items()}
    assert "allow_pickle" in specs(ENGINE_OPTIONS["diffusion"]) and "allow_pickle" in START_OPTIONS
    assert parameters["choices"] == {name: list(spec.choices) for name, (spec, _) in specs(GenerationParams).items()
                                     if spec.kind == "choice"}
    assert set(parameters["choices"]) == {"engine", "tile", "appearance", "ip_mode", "sketch_mode", "normals"}
    assert parameters["names"] == {"derive": ["height", "normal", "roughness"]}


def _blender_properties() -> tuple[dict[str, dict], dict[str, list[str]]]:
    """{property: {keyword: value}} of the panel settings and {ITEMS list: identifiers}, read with ast
    (blender_addon cannot be imported here: it needs bpy)."""
    tree = ast.parse((ROOT / "blender_addon" / "properties.py").read_text())
    items = {node.targets[0].id: [ast.literal_eval(item.elts[0]) for item in node.value.elts]
             for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id.endswith("_ITEMS")}
    settings_class = next(node for node in tree.body
                          if isinstance(node, ast.ClassDef) and node.name == "TEXTURE_VARIANTS_PG_settings")
    props = {}
    for node in settings_class.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Call):
            props[node.target.id] = {kw.arg: (kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value))
                                     for kw in node.annotation.keywords if kw.arg in ("default", "min", "max", "items")}
    return props, items


def test_the_blender_panel_ranges_and_defaults_match_the_backend():
    props, items = _blender_properties()
    for name in ("variants", "steps", "size", "balance", "seed"):
        spec, default = specs(GenerationParams)[name]
        assert props[name]["min"] == spec.low, name
        if name == "size":  # the panel's side: any value of it is valid here (the add-on caps it lower)
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
