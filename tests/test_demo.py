"""The demo behind scripts/demo: what it writes, what it prints, and that it never overwrites."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from backend import demo
from backend.metrics import seam_score
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return demo.run_demo(out, texture="gravel", variants=2, seed=3, size=128, engine="patch")


def test_demo_writes_variants_tiled_previews_contact_sheet_and_metrics(first_run):
    folder = first_run.folder
    assert folder.name == "gravel-patch-s3" and first_run.engine == "patch"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["reference.png", "variant-1.png", "variant-2.png", "variant-1-tiled3x3.png",
                            "variant-2-tiled3x3.png", "contact_sheet.png", "metrics.json"])
    assert sorted(p.name for p in first_run.paths) == names
    for i in (1, 2):
        with Image.open(folder / f"variant-{i}.png") as v, Image.open(folder / f"variant-{i}-tiled3x3.png") as t:
            assert v.size == (128, 128) and t.size == (384, 384)
            assert json.loads(v.text["parameters"])["seed"] == 3 + i - 1
            np.testing.assert_array_equal(np.asarray(t)[128:256, 256:384], np.asarray(v))
    with Image.open(folder / "contact_sheet.png") as sheet:
        # reference + 2 variants across; two rows of pictures and the metrics table below
        assert sheet.width == 3 * demo.THUMB + 4 * 8 and sheet.height > 2 * demo.THUMB + 100


def test_demo_metrics_are_real_and_recorded(first_run):
    report = json.loads((first_run.folder / "metrics.json").read_text())
    assert report["engine"] == "patch" and report["texture"] == "gravel" and len(report["variants"]) == 2
    for row, m in zip(report["variants"], first_run.metrics, strict=True):
        assert row["seam_x"] == m["seam_x"] and 0.5 < m["seam_x"] < 1.5 and 0.5 < m["seam_y"] < 1.5
        assert 0 < m["appearance"] < 1.5 and m["copy"] < 0.9
    # The reference is a crop of a photo: it is the one that does not tile.
    with Image.open(first_run.folder / "reference.png") as reference:
        assert report["reference"] == {f"seam_{k}": v for k, v in seam_score(reference).items()}
    assert min(report["reference"].values()) > max(max(m["seam_x"], m["seam_y"]) for m in first_run.metrics)


def test_a_second_run_never_overwrites_the_first(first_run):
    before = {p.name: p.read_bytes() for p in first_run.folder.iterdir()}
    again = demo.run_demo(first_run.folder.parent, texture="gravel", variants=2, seed=3, size=128, engine="patch")
    assert again.folder.name == "gravel-patch-s3-2"
    assert {p.name: p.read_bytes() for p in first_run.folder.iterdir()} == before
    # Same seed, same pictures.
    assert (again.folder / "variant-1.png").read_bytes() == before["variant-1.png"]


def test_metrics_table_lists_every_variant():
    lines = demo.metrics_lines([{"seam_x": 1.0, "seam_y": 0.99, "appearance": 0.5, "copy": 0.25}],
                               {"seam_x": 3.25, "seam_y": 2.5})
    assert lines[0].split() == ["seam", "x", "seam", "y", "appearance", "copy"]
    assert lines[1].split() == ["reference", "3.25", "2.50"]
    assert lines[2].split() == ["variant", "1", "1.00", "0.99", "0.50", "0.25"]


def test_contact_sheet_is_colour_for_colour_variants_and_shows_alpha_over_white():
    reference = Image.new("RGB", (64, 64), (200, 30, 30))
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sheet = demo.contact_sheet(reference, [clear], [{"seam_x": 1, "seam_y": 1, "appearance": 1, "copy": 0}])
    assert sheet.mode == "RGB"
    x = 8 + demo.THUMB + 8 + demo.THUMB // 2
    assert sheet.getpixel((x, 26 + 26 + demo.THUMB // 2)) == (255, 255, 255)


def test_unknown_texture_is_refused():
    with pytest.raises(ValueError, match="brick, grass, gravel"):
        demo.demo_texture("marble", 128)


def test_demo_command_uses_the_best_engine_here_and_says_how_to_get_the_models(tmp_path):
    # A base model that is not there: auto must fall back to the patch engine and say so.
    result = subprocess.run(
        [sys.executable, "-m", "backend", "demo", "--out", str(tmp_path), "--texture", "brick", "--variants", "1",
         "--size", "64", "--seed", "1", "--base", str(tmp_path / "no-model")],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "variant 1" in out and "reference" in out
    assert str(tmp_path / "brick-patch-s1" / "contact_sheet.png") in out
    assert "engine: patch" in out and "python -m backend download-models" in out
    assert (tmp_path / "brick-patch-s1" / "contact_sheet.png").exists()
