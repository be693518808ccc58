"""In real Blender: a structure guide made from the texture's edges, painted on, and generated with
(diffusion engine on the tiny test models, LGP guidance through the real backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.blender.conftest import run_scenario, tiny_model_env

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def guided(tmp_path_factory, blender, tiny_models, color_texture_path):
    workdir = tmp_path_factory.mktemp("guide")
    return run_scenario("scenario_guide", workdir, blender, color_texture_path,
                        env=tiny_model_env(tiny_models) | {"TINY_LGP": str(tiny_models["lgp"]),
                                                           "TINY_FAST_LORA": str(tiny_models["fast_lora"]),
                                                           "HF_HOME": str(workdir / "empty-hf-cache")})


def test_the_guide_is_the_textures_edges_white_on_black(guided):
    assert guided["make_guide"] == {"result": ["FINISHED"], "error": None}
    guide = guided["guide"]
    assert guide["size"] == [128, 128]  # the texture's centre square (it is 128 px: no downscaling)
    assert guide["values"] == [0.0, 1.0] and 0.05 < guide["white_fraction"] < 0.2  # lines, mostly background
    assert guide["packed"]  # kept in the .blend
    assert guided["guide_dirty"]


def test_the_panel_shows_mode_and_strength_once_there_is_a_guide(guided):
    before = [tuple(c) for c in guided["panel_without_guide"]]
    assert ("prop", "sketch") in before and ("operator", "texture_variants.make_guide") in before
    assert ("prop", "sketch_mode") not in before and ("prop", "sketch_strength") not in before
    after = [tuple(c) for c in guided["panel_with_guide"]]
    assert {("prop", "sketch"), ("prop", "sketch_mode"), ("prop", "sketch_strength")} <= set(after)
    assert guided["panel_with_guide_greyed"] == guided["panel_without_guide_greyed"]  # nothing greyed by it


def test_without_its_model_the_guide_says_which_preference_to_set(guided):
    outcome = guided["generate_without_lgp"]
    assert outcome["result"] is None
    assert "LGP" in outcome["error"] and "set LGP Model in Edit > Preferences > Add-ons > Texture Variants" in \
        outcome["error"] and "Download" in outcome["error"]


def test_generating_with_the_painted_guide_sends_it_to_the_backend(guided):
    assert guided["generate"] == {"result": ["FINISHED"], "error": None}
    [result] = guided["results"]
    assert result["engine"] == "diffusion" and result["size"] == [64, 64]
    with Image.open(result["path"]) as image:
        record = json.loads(image.text["parameters"])
    sketch = Path(record["sketch"])
    assert sketch.parent in Path(result["path"]).parents and sketch.name.startswith("guide-")  # the job folder
    assert record["sketch_mode"] == "lgp" and record["sketch_strength"] == 1.5 and record["sketch_window_steps"] == [0]
    with Image.open(sketch) as written:  # the painted line went with it
        middle = written.convert("L").crop((0, 63, 128, 64))  # Blender row 64 counts from the bottom
        assert min(middle.getdata()) == 255


def test_quality_fast_keeps_the_guide_and_reads_its_lora_from_the_preferences(guided):
    assert guided["generate_fast"] == {"result": ["FINISHED"], "error": None}
    [result] = guided["results_fast"]
    with Image.open(result["path"]) as image:
        record = json.loads(image.text["parameters"])
    assert record["sampler"] == "fast" and record["sketch_mode"] == "lgp" and Path(record["sketch"]).name.startswith(
        "guide-")
