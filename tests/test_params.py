"""backend.params: every default and range is declared once, checked once, and what other parts
show (the service's hello, the CLI, the Blender panel) agrees with it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import InputError
from backend.params import ENGINE_OPTIONS, DiffusionOptions, GenerationParams, PatchOptions, specs
from backend.service.protocol import START_OPTIONS, generate_parameters

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
    assert set(parameters["choices"]) == {"engine", "sampler", "tile", "appearance", "ip_mode", "sketch_mode", "normals"}
    assert parameters["names"] == {"derive": ["height", "normal", "roughness"]}
