"""The report card (backend/report_card.py): tiles? new? same look? — on real CC0 textures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from backend import generate_variants, report_card
from tests.conftest import ROOT
from tests.service_process import ServiceProcess


def _texture(name: str, size=(256, 256)) -> Image.Image:
    arr = getattr(skimage.data, name)()
    image = Image.fromarray(arr).convert("RGB")
    return image.resize(size, Image.Resampling.LANCZOS)


@pytest.mark.parametrize("name", ["brick", "gravel", "grass"])
@pytest.mark.parametrize("shift", [(0, 0), (64, 128), (37, 101), (3, 250)])
def test_a_rolled_copy_is_not_new(name, shift):
    """Any cyclic shift, on or off the analysis grid, is found: novelty about 0."""
    ref = _texture(name)
    card = report_card.card(np.roll(np.asarray(ref), shift, axis=(0, 1)), ref)
    assert card["novelty"] <= 0.05 and card["new"] is False


def test_a_rolled_copy_of_a_non_square_texture_is_not_new():
    ref = _texture("brick", (384, 192))
    card = report_card.card(np.roll(np.asarray(ref), (51, 203), axis=(0, 1)), ref)
    assert card["novelty"] <= 0.05


@pytest.mark.parametrize("name", ["brick", "gravel", "grass"])
def test_a_patch_variant_is_new_tiles_and_keeps_the_look(name):
    ref = _texture(name)
    for image in generate_variants(ref, engine="patch", variants=2, size=256, seed=5):
        card = json.loads(image.info["parameters"])["card"]
        assert card["novelty"] >= 0.3, card
        assert card["tiles"] and card["new"] and card["same_look"], card
        assert max(card["seam"].values()) <= 1.2


@pytest.mark.parametrize("name", ["brick", "gravel", "grass"])
def test_a_photo_crop_does_not_tile(name):
    """The photo itself, cut off its period, is flagged; noise is flagged as another look."""
    ref = _texture(name)
    assert report_card.card(ref, ref)["tiles"] is False
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    card = report_card.card(noise, ref)
    assert card["same_look"] is False and card["look"] > report_card.LOOK_LIMIT


def test_tile_axes_limit_the_verdict():
    """A texture made to tile along x only is judged on x only."""
    ref = _texture("brick")
    image = generate_variants(ref, engine="patch", variants=1, size=256, seed=1, tile="x")[0]
    card = json.loads(image.info["parameters"])["card"]
    assert set(card["seam"]) == {"x"} and card["tiles"]


def test_maps_get_cards_given_ones_against_their_reference(tmp_path):
    ref = _texture("brick")
    rough = tmp_path / "rough.png"
    Image.fromarray(255 - np.asarray(ref.convert("L"))).save(rough)
    image = generate_variants(ref, engine="patch", variants=1, size=256, seed=2, maps={"roughness": str(rough)},
                              derive=["height"])[0]
    card = json.loads(image.info["parameters"])["card"]
    assert set(card["maps"]) == {"height", "roughness"}
    assert {"seam", "novelty", "look", "tiles", "new", "same_look"} <= set(card["maps"]["roughness"])
    assert set(card["maps"]["height"]) == {"seam", "tiles"}  # derived: nothing to compare with
    assert card["maps"]["roughness"]["tiles"] and card["maps"]["height"]["tiles"]
    # the roughness is the inverted luminance, gathered like the colour: as new as the colour
    assert abs(card["maps"]["roughness"]["novelty"] - card["novelty"]) < 0.1


def test_the_score_command_prints_the_card_of_the_result_event(tmp_path):
    """A job through the real service, then `python -m backend score` on its files: the same card."""
    ref = _texture("gravel")
    ref_path, rough = tmp_path / "gravel.png", tmp_path / "rough.png"
    ref.save(ref_path)
    Image.fromarray(np.asarray(ref.convert("L"))[::-1]).save(rough)
    proc = ServiceProcess(tmp_path)
    try:
        job = proc.send("generate", input=str(ref_path), output_dir=str(tmp_path / "job"), engine="patch",
                        size=128, variants=1, seed=4, maps={"roughness": str(rough)})
        result = proc.job_events(job)[-1]
    finally:
        proc.stop()
    assert result["type"] == "result", result
    entry = result["files"][0]
    command = [sys.executable, "-m", "backend", "score", entry["path"], "--reference", str(ref_path),
               "--map", f"roughness={entry['maps']['roughness']}", "--reference-map", f"roughness={rough}"]
    printed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == entry["parameters"]["card"]


def test_the_card_costs_little_next_to_the_reference_work():
    """Everything that depends on the reference only is computed once per call (the Judge keeps it)."""
    ref = _texture("brick")
    judge = report_card.Judge(ref)
    judge.card(np.asarray(ref))
    assert len(judge._scaled) == 1
    judge.card(np.roll(np.asarray(ref), 5, axis=1))
    assert len(judge._scaled) == 1


class _Returns:
    """An engine that makes the given images (the card, not the sampling, is under test)."""

    def __init__(self, images):
        self.images = images

    def generate(self, ref, params, **kwargs):
        return [image.copy() for image in self.images[:params.variants]]


@pytest.mark.parametrize("sampler", ["fast", "full"])
def test_a_fast_variant_is_sent_back_to_quality_full_exactly_when_its_look_fails(monkeypatch, caplog, sampler):
    """The fidelity gate of few-step sampling: a rolled copy keeps the look, noise does not; only a Fast
    variant's card carries `remake_full`, true for the failing one alone."""
    from backend import engines

    ref = _texture("brick")
    same = Image.fromarray(np.roll(np.asarray(ref), (64, 96), axis=(0, 1)))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    monkeypatch.setattr(engines, "resolve", lambda *args: ("diffusion", "engine diffusion (asked for)"))
    monkeypatch.setattr(engines, "get_engine", lambda name: _Returns([same, noise]))
    with caplog.at_level("WARNING", logger="backend.api"):
        images = generate_variants(ref, engine="diffusion", variants=2, seed=7, size=256, sampler=sampler)
    records = [json.loads(image.info["parameters"]) for image in images]
    cards = [record["card"] for record in records]
    assert [card["same_look"] for card in cards] == [True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if sampler == "fast":
        assert [card["remake_full"] for card in cards] == [False, True]
        assert len(warnings) == 1 and "variant 1 (seed 8, 8 fast steps)" in warnings[0]
        assert "Quality: Full" in warnings[0] and records[1]["warnings"] == warnings and "warnings" not in records[0]
    else:
        assert all("remake_full" not in card for card in cards) and not warnings
        assert all("warnings" not in record for record in records)


def test_the_gate_follows_the_look_verdict_alone():
    ref = _texture("gravel")
    card = report_card.card(np.roll(np.asarray(ref), (10, 20), axis=(0, 1)), ref)
    assert report_card.few_step_gate(card)["remake_full"] is (not card["same_look"]) is False
    failing = card | {"look": 9.0, "same_look": False}
    assert report_card.few_step_gate(failing) == failing | {"remake_full": True}
