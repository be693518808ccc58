"""In real Blender: Generate's UI path (a modal operator polling on a timer), events simulated."""

from __future__ import annotations

import pytest

from tests.blender.conftest import run_scenario, tiny_model_env

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def modal(tmp_path_factory, blender, tiny_models, color_texture_path):
    workdir = tmp_path_factory.mktemp("modal")
    return run_scenario("scenario_modal", workdir, blender, color_texture_path,
                        env=tiny_model_env(tiny_models))


def test_modal_generate_polls_to_the_result(modal):
    result, states, reports = modal["done"]
    assert result == ["FINISHED"]
    assert states[0] in ("queued", "running") and states[-1] == "done"
    assert reports == [[["INFO"], "2 variants ready: pick one and click Apply"]]
    assert modal["done_results"] == [[21, [64, 64]], [22, [64, 64]]]
    assert modal["done_material_unchanged"]


def test_esc_cancels_and_changes_nothing(modal):
    result, states, reports = modal["esc"]
    assert result == ["CANCELLED"] and "running" in states and states[-1] == "cancelled"
    assert reports[-1][0] == ["ERROR"] and "Generation cancelled" in reports[-1][1]
    assert modal["esc_unchanged"] and modal["esc_job_folder_removed"]


def test_a_backend_that_is_not_set_up_fails_the_modal_job_with_a_hint(modal):
    result, states, reports = modal["not_set_up"]
    assert result == ["CANCELLED"] and states[-1] == "failed"
    assert "no-venv" in reports[-1][1] and "To fix:" in reports[-1][1]


@pytest.mark.parametrize("case", ["check_timeout", "check_esc"])
def test_check_backend_never_blocks_and_ends_on_timeout_or_esc(modal, case):
    outcome = modal[case]
    assert outcome["invoke_s"] < 1.0 and outcome["longest_modal_s"] < 1.0  # the UI is never held
    assert outcome["result"] == ["CANCELLED"]
    assert outcome["status"].startswith("Not ready")
    if case == "check_timeout":
        assert 2.0 <= outcome["total_s"] < 10 and "did not answer within 2 s" in outcome["reports"][-1][1]
    else:
        assert outcome["total_s"] < 5 and "cancelled" in outcome["reports"][-1][1]
        assert outcome["process_gone"]
