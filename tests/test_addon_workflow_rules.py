"""The add-on's plain rules (no bpy): the HDR encoding, job clean-up, the ETA, the panel rules,
messages in the add-on's own terms."""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blender_addon import panel_rules, paths
from blender_addon.connection import job
from blender_addon.errors import CONTROL_MODELS, UserError, in_blender_terms
from blender_addon.pixels import colour


@given(st.lists(st.floats(0, 40, allow_nan=False), min_size=4, max_size=64))
def test_hdr_encoding_round_trips_within_one_8_bit_step(values):
    scale = colour.exposure_scale(colour.brightest(values))
    assert scale >= max(values) and (scale == 1.0 or scale < 2 * max(values))
    encoded = [round(colour.linear_to_srgb(v / scale) * 255) / 255 for v in values]
    import array

    decoded = colour.decode(array.array("f", encoded), scale, channels=1)
    for v, d in zip(values, decoded, strict=True):
        step = (colour.srgb_to_linear(min(1.0, colour.linear_to_srgb(v / scale) + 1 / 255))
                - colour.srgb_to_linear(colour.linear_to_srgb(v / scale))) * scale
        assert abs(d - v) <= step + 1e-4


def _job(root, name, finished_days_ago=None, size=100):
    folder = root / name
    folder.mkdir()
    (folder / "v.png").write_bytes(b"x" * size)
    if finished_days_ago is not None:
        mark = folder / paths.FINISHED_MARK
        mark.touch()
        t = time.time() - finished_days_ago * 86400
        os.utime(mark, (t, t))
    return folder


def test_clean_up_deletes_only_finished_jobs_past_the_limits(tmp_path):
    old = _job(tmp_path, "old", 10)
    young = _job(tmp_path, "young", 1)
    running = _job(tmp_path, "running")
    used = _job(tmp_path, "used", 10)
    removed = paths.clean_up_jobs(tmp_path, 7, 1000, in_use=(str(used),))
    assert removed == [old] and young.exists() and running.exists() and used.exists()
    # over the size limit: the oldest finished ones go first, unfinished ones never
    _job(tmp_path, "older", 3, size=600)
    removed = paths.clean_up_jobs(tmp_path, 7, 0.00005, in_use=(str(used),))
    assert [p.name for p in removed] == ["older", "young"] and running.exists()


def test_eta_comes_from_measured_steps_and_does_not_jump():
    tracker = job.JobTracker("j")
    tracker.apply({"type": "progress", "id": "j", "step": 1, "total": 30, "elapsed": 50.0, "eta": 1519.0})
    assert tracker.eta == 1519.0  # until two steps are measured, the backend's word
    etas = []
    for step in range(2, 12):
        slow = 3.0 if step == 6 else 1.0  # one slow step
        tracker.apply({"type": "progress", "id": "j", "step": step, "total": 30,
                       "elapsed": tracker.elapsed + slow, "eta": 5.0})
        etas.append(tracker.eta)
    measured = [e for e in etas if e != 5.0]
    assert measured and all(abs(e - (30 - s)) <= 1.0 for e, s in zip(etas[-5:], range(7, 12), strict=True))


def test_panel_rules_hide_size_under_match_and_prompts_under_patch():
    assert panel_rules.setting_states("diffusion", "kv", False, size_mode="match")["size"] == panel_rules.HIDDEN
    assert panel_rules.setting_states("diffusion", "kv", False, size_mode="fixed")["size"] == panel_rules.SHOWN
    patch = panel_rules.setting_states("patch", "kv", False, size_mode="fixed")
    assert patch["prompt"] == patch["negative_prompt"] == panel_rules.HIDDEN


def test_model_errors_name_the_preferences_not_command_line_flags():
    content = in_blender_terms(UserError("models_missing", "content-suppression text encoder 'x' not found",
                                         "pass --content-encoder FOLDER to generate"))
    assert "Content Encoder" in content.hint and "--" not in content.hint
    base = in_blender_terms(UserError("models_missing", "no SD1.5 model", "run python -m backend download"))
    assert "Base Model" in base.hint and "python -m" not in base.hint


@pytest.mark.parametrize(("function", "field"), [("resolve_lgp", "LGP Model"), ("resolve_controlnet", "ControlNet Model"),
                                                 ("resolve_sam", "Segment Anything Model")])
def test_a_controls_missing_model_names_its_own_preference(function, field, tmp_path, monkeypatch):
    """The backend's real errors for the controls' models (an empty cache): each hint names the field."""
    from backend import sam
    from backend.diffusion import sketch_models

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for name in ("TEXTURE_VARIANTS_LGP", "TEXTURE_VARIANTS_CONTROLNET", "TEXTURE_VARIANTS_SAM"):
        monkeypatch.delenv(name, raising=False)
    resolve = getattr(sam if function == "resolve_sam" else sketch_models, function)
    with pytest.raises(Exception) as raised:
        resolve(None)
    error = in_blender_terms(UserError("models_missing", str(raised.value).split("\n")[0], "run download-models"))
    assert f"set {field} in Edit > Preferences" in error.hint and "Download" in error.hint
    assert [f for _, f, _ in CONTROL_MODELS if f in error.hint] == [field]


def test_quality_fast_is_sent_for_diffusion_only_and_its_missing_lora_says_download(tmp_path, monkeypatch):
    from backend.diffusion import fast

    settings = {"engine": "diffusion", "variants": 1, "steps": 30, "size": 64, "tile": "both", "balance": 0.5,
                "appearance": "kv", "sampler": "fast"}
    assert job.request_params(settings, 1)["sampler"] == "fast"
    assert "sampler" not in job.request_params(settings | {"sampler": "full"}, 1)  # the default: not sent
    assert "sampler" not in job.request_params(settings | {"engine": "patch"}, 1)
    assert panel_rules.setting_states("diffusion", "kv", False, sampler="fast")["steps"] == panel_rules.INACTIVE
    assert panel_rules.setting_states("patch", "kv", False)["sampler"] == panel_rules.HIDDEN
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(Exception) as raised:
        fast.resolve(None)
    error = in_blender_terms(UserError("models_missing", str(raised.value).split("\n")[0], "run download-models"))
    assert error.hint.startswith("set Fast Sampling LoRA in") and "Download" in error.hint and "Quality to Full" in \
        error.hint


def test_request_carries_prompts_and_the_content_encoder_only_where_they_count():
    settings = {"engine": "diffusion", "variants": 1, "steps": 2, "size": 64, "tile": "both", "balance": 0.5,
                "appearance": "kv", "style_only": True, "suppress_content": "bricks", "prompt": " red bricks ",
                "negative_prompt": "", "content_encoder": "/models/clip"}
    params = job.request_params(settings, 1)
    assert params["prompt"] == "red bricks" and "negative_prompt" not in params
    assert params["extra"] == {"content_encoder": "/models/clip"}
    from backend.params import GenerationParams

    GenerationParams.build(params.pop("extra"), **params)
    assert "prompt" not in job.request_params(settings | {"engine": "patch"}, 1)


@pytest.mark.parametrize(("texture", "found"), [("brick", "a pattern of bricks"), ("gravel", "an irregular texture")])
def test_the_panel_says_what_the_patch_engine_found_in_a_real_texture(texture, found):
    import skimage.data
    from PIL import Image

    from backend import generate_variants

    image = Image.fromarray(getattr(skimage.data, texture)()).crop((0, 0, 256, 256))
    params = json.loads(generate_variants(image, engine="patch", size=256, seed=3)[0].info["parameters"])
    text = panel_rules.patch_expectation(params)
    assert text.startswith(f"Found {found}")
    assert ("repeating every" in text) == (texture == "brick")
    assert "[" not in text and "None" not in text  # numbers in words, not the record's lists
    assert panel_rules.patch_expectation(params | {"engine": "diffusion"}) == ""


def test_history_rows_say_the_kind_of_set_and_its_key_settings():
    import skimage.data
    from PIL import Image

    from backend import generate_variants

    image = Image.fromarray(skimage.data.gravel()).crop((0, 0, 128, 128))
    record = json.loads(generate_variants(image, engine="patch", size=128, seed=3, balance=0.25)[0].info["parameters"])
    assert panel_rules.result_summary(record) == "patch variants · balance 0.25"
    guided = {"engine": "diffusion", "balance": 0.5, "appearance": "kv", "sketch": "/j/guide.png",
              "sketch_mode": "lgp", "sketch_strength": 1.5, "prompt": "red bricks"}
    assert panel_rules.result_summary(guided) == "guided diffusion variants (lgp 1.5) · balance 0.50 · kv · 'red bricks'"
    assert panel_rules.result_summary({"engine": "diffusion", "restyle_prompt": "moss", "restyle_strength": 0.5}) == \
        "restyle 'moss' · strength 0.50"
    assert panel_rules.result_summary({"kind": "tileable"}).startswith("tileable")
    assert panel_rules.result_summary({"kind": "layout", "cells": [4, 3]}) == "tile set layout 4×3"
    assert panel_rules.result_summary({"upscale_factor": 2, "engine": "patch", "seed": 3}) == "upscale ×2"
