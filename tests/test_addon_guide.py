"""The add-on's structure guide, outside Blender: the edge picture (blender_addon/pixels/edges.py), the request
fields it adds (job.request_params) and when the panel shows its settings (panel_rules)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_addon import panel_rules
from blender_addon.connection import job as jobs
from blender_addon.pixels import edges


def _stripes(width: int, height: int, period: int) -> list[float]:
    return [1.0 if (x // period) % 2 else 0.0 for y in range(height) for x in range(width)]


def test_edges_of_vertical_stripes_are_vertical_lines_at_the_steps():
    width, height = 16, 8
    lines = np.array(edges.edge_lines(_stripes(width, height, 4), width, height, keep=0.5)).reshape(height, width)
    columns = set(np.flatnonzero(lines.all(axis=0)))
    assert columns == {0, 3, 4, 7, 8, 11, 12, 15}  # both sides of every step, the wrap-around one too
    assert not lines[:, [1, 2, 5, 6, 9, 10, 13, 14]].any()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 11), st.integers(0, 7), st.integers(0, 2**32 - 1))
def test_edges_roll_with_the_texture(dx, dy, seed):
    width, height = 12, 8
    values = np.random.default_rng(seed).random((height, width))
    a = np.array(edges.edge_lines(values.ravel().tolist(), width, height)).reshape(height, width)
    b = np.array(edges.edge_lines(np.roll(values, (dy, dx), (0, 1)).ravel().tolist(), width, height))
    assert np.array_equal(np.roll(a, (dy, dx), (0, 1)), b.reshape(height, width))  # it tiles like the texture


def test_a_flat_texture_has_no_edges_and_luminance_reads_rgba():
    assert edges.edge_lines([0.5] * 64, 8, 8) == [0.0] * 64
    assert edges.luminance([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5], 2, 1) == [1.0, 0.7152]


def test_the_guide_goes_with_the_request_only_when_there_is_one():
    from backend.params import GenerationParams

    panel = {"engine": "diffusion", "variants": 1, "steps": 30, "size": 512, "tile": "both", "balance": 0.5,
             "appearance": "kv", "sketch_mode": "controlnet", "sketch_strength": 2}
    without = jobs.request_params(panel, 3)
    assert not {"sketch", "sketch_mode", "sketch_strength"} & set(without)
    guided = jobs.request_params(panel, 3, "/jobs/1/guide-bricks.png")
    assert (guided["sketch"], guided["sketch_mode"], guided["sketch_strength"]) == (
        "/jobs/1/guide-bricks.png", "controlnet", 2.0)
    GenerationParams(**guided).validated()


def test_guide_settings_are_diffusion_only_and_appear_with_a_guide():
    assert {panel_rules.setting_states("patch", "kv", False, True)[n] for n in ("sketch", "sketch_mode")} == {
        panel_rules.HIDDEN}
    without = panel_rules.setting_states("diffusion", "kv", False, False)
    assert without["sketch"] == panel_rules.SHOWN
    assert without["sketch_mode"] == without["sketch_strength"] == panel_rules.HIDDEN
    guided = panel_rules.setting_states(None, "kv", False, True)
    assert guided["sketch_mode"] == guided["sketch_strength"] == panel_rules.SHOWN
