"""In real Blender: the Variants panel draws only what the chosen engine and appearance mode use,
and says which engine Auto will use."""

from __future__ import annotations

import pytest

from tests.blender.conftest import run_scenario

pytestmark = pytest.mark.blender

ALWAYS = ["engine", "variants", "seed", "randomize_seed", "size", "tile", "balance"]
DIFFUSION_ONLY = ["steps", "appearance", "style_only", "suppress_content"]


@pytest.fixture(scope="module")
def panel_results(tmp_path_factory, blender, color_texture_path):
    workdir = tmp_path_factory.mktemp("panel")
    return run_scenario("scenario_panel", workdir, blender, color_texture_path)


@pytest.fixture(scope="module")
def drawn(panel_results):
    return panel_results["drawn"]


def test_patch_hides_what_only_diffusion_reads(drawn):
    patch = drawn["patch"]
    assert set(ALWAYS) <= set(patch["props"])
    assert not set(DIFFUSION_ONLY) & set(patch["props"])
    assert patch["greyed"] == []  # the balance is the patch engine's block size: it counts


@pytest.mark.parametrize("case", ["diffusion_kv", "diffusion_ad"])
def test_diffusion_shows_everything_and_greys_content_without_style_only(drawn, case):
    shown = drawn[case]
    assert set(ALWAYS + DIFFUSION_ONLY) <= set(shown["props"])
    assert shown["greyed"] == ["suppress_content"]


def test_content_counts_with_style_only(drawn):
    assert "suppress_content" in drawn["diffusion_style_only"]["props"]
    assert drawn["diffusion_style_only"]["greyed"] == []


def test_appearance_none_greys_the_balance(drawn):
    # with no kv replacement there is no window for the balance to set
    assert sorted(drawn["diffusion_none"]["greyed"]) == ["balance", "suppress_content"]


def test_auto_says_which_engine_it_will_use(drawn):
    def auto_line(case):
        return [label for label in drawn[case]["labels"] if label.startswith("Auto uses")]

    assert auto_line("auto_models_found") == ["Auto uses Diffusion: its models are on this machine"]
    assert auto_line("auto_no_models") == ["Auto uses Patch: the diffusion models were not found"]
    assert auto_line("auto_unknown") == ["Auto uses Patch unless the diffusion models are found "
                                         "(Check Backend tells)"]
    assert not auto_line("patch") and not auto_line("diffusion_kv")  # only under Auto
    # Auto follows the engine it resolves to; undecided, every setting may still count
    assert not set(DIFFUSION_ONLY) & set(drawn["auto_no_models"]["props"])
    assert set(DIFFUSION_ONLY) <= set(drawn["auto_models_found"]["props"])
    assert set(DIFFUSION_ONLY) <= set(drawn["auto_unknown"]["props"])
    assert "balance" not in drawn["auto_unknown"]["greyed"]  # it may become the patch engine's block size


def test_every_setting_shows_in_some_case_and_size_only_when_fixed(drawn, request):
    results = request.getfixturevalue("panel_results")
    shown = {prop for case in drawn.values() for prop in case["props"]}
    assert set(results["settings_properties"]) - {"current"} <= shown  # nothing the panel forgets
    assert "size" not in drawn["match_source"]["props"] and "size_mode" in drawn["match_source"]["props"]
    assert "Makes 128×128" in drawn["match_source"]["labels"]
    assert "size" in drawn["patch"]["props"]


def test_prompts_show_for_diffusion_only(drawn):
    assert {"prompt", "negative_prompt"} <= set(drawn["diffusion_kv"]["props"])
    assert not {"prompt", "negative_prompt"} & set(drawn["patch"]["props"])


def test_results_say_what_they_were_made_for_and_offer_the_explicit_ways(panel_results):
    own, other, applied = (panel_results["results_drawn"][k] for k in ("own", "other_material", "applied"))
    assert "texture_variants.apply_variant" in own["operators"]
    assert "texture_variants.apply_variant.object_only=True" in own["operators"]
    assert "texture_variants.apply_variant.to_this_material=True" not in own["operators"]
    assert any(label.startswith("Made for 'Elsewhere'") for label in other["labels"])
    assert "texture_variants.apply_variant.to_this_material=True" in other["operators"]
    assert "texture_variants.use_result_set.index=0" in own["operators"]  # the history fold
    assert any(label.startswith("History (1)") for label in own["labels"])
    assert {"texture_variants.revert", "texture_variants.bake"} <= set(applied["operators"])
    assert "texture_variants.revert" not in own["operators"]
