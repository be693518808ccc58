"""Each option declared once: blender_addon/generated/params.json is backend/params.py's declarations
(regenerated here and compared), and the add-on's reader (blender_addon/parameters.py) hands them out."""

from __future__ import annotations

import sys

import pytest

from backend.params import DERIVABLE_MAPS, MATERIAL_MAPS, DiffusionOptions, GenerationParams, specs
from blender_addon import parameters
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import params_spec  # noqa: E402


def test_the_checked_in_spec_is_what_backend_params_declares():
    checked_in = params_spec.TARGET.read_text(encoding="utf-8")
    assert checked_in == params_spec.render(), (
        f"{params_spec.TARGET.relative_to(ROOT)} is stale: run {params_spec.COMMAND}")


def test_the_check_fails_on_a_stale_spec_and_says_how_to_refresh_it(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "params.json"
    stale.write_text(params_spec.render().replace('"default": 0.5', '"default": 0.6', 1), encoding="utf-8")
    monkeypatch.setattr(params_spec, "TARGET", stale)
    monkeypatch.setattr(params_spec, "ROOT", tmp_path)
    assert params_spec.main(["--check"]) == 1
    assert params_spec.COMMAND in capsys.readouterr().err
    assert params_spec.main([]) == 0 and params_spec.main(["--check"]) == 0


def test_the_addon_reads_the_backends_defaults_ranges_choices_and_help():
    for name, (spec, default) in specs(GenerationParams).items():
        assert parameters.default(name) == (list(default) if isinstance(default, tuple) else default), name
        if spec.kind in ("int", "number") and not spec.optional:
            kw = parameters.keywords(name)
            assert (kw["default"], kw["min"], kw["max"]) == (default, spec.low, spec.high), name
        if spec.kind == "choice":
            assert parameters.choices(name) == spec.choices, name
    spec, default = specs(DiffusionOptions)["restyle_strength"]
    assert parameters.keywords("restyle_strength") == {"default": default, "min": spec.low, "max": spec.high,
                                                       "description": spec.hint[0].upper() + spec.hint[1:]}
    assert parameters.keywords("steps", default=12)["default"] == 12  # the panel's own default wins
    assert parameters.material_maps() == MATERIAL_MAPS and parameters.derivable_maps() == DERIVABLE_MAPS


def test_panel_labels_must_name_exactly_the_declared_choices():
    labels = {choice: (choice.title(), "") for choice in specs(GenerationParams)["tile"][0].choices}
    assert [item[0] for item in parameters.enum_items("tile", labels)] == list(specs(GenerationParams)["tile"][0].choices)
    with pytest.raises(ValueError, match="params_spec.py"):
        parameters.enum_items("tile", {k: v for k, v in labels.items() if k != "none"})
    with pytest.raises(KeyError, match="not a backend parameter"):
        parameters.declared("no_such_option")
