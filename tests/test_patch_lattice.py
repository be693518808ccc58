"""Lattice detection and rectification of near-regular textures (backend/patch/lattice.py)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.patch import lattice
from tests.test_metrics import brick_wall


@settings(max_examples=8, deadline=None)
@given(height=st.integers(16, 40), width=st.integers(40, 90))
def test_a_frontal_brick_wall_has_its_axis_periods(height, width):
    width = min(width, int(4.5 * height))  # longer bricks: see lattice's docstring (limit)
    width -= width % 2  # half-brick stagger
    found = lattice.detect(brick_wall(384, (height, width)).astype(np.float32))
    # Across the stagger the wall repeats every two courses, along it every brick.
    assert found.regular
    assert found.period_y == pytest.approx(2 * height, abs=1.5)
    assert found.period_x == pytest.approx(width, abs=1.5)


def test_very_long_bricks_keep_the_period_across_the_courses():
    found = lattice.detect(brick_wall(384, (16, 86)).astype(np.float32))
    assert found.period_y == pytest.approx(32, abs=1.5)  # the along-course period is the documented limit


def test_real_textures():
    brick = lattice.detect(skimage.data.brick().astype(np.float32))
    assert brick.period_y is None and 33 <= brick.period_x <= 39  # columns seen in perspective
    assert lattice.detect(skimage.data.checkerboard().astype(np.float32)).period_x == pytest.approx(50, abs=1)
    for name in ("grass", "gravel", "immunohistochemistry"):
        image = getattr(skimage.data, name)().astype(np.float32)
        assert lattice.detect(image if image.ndim == 2 else image.mean(axis=2)) == lattice.STOCHASTIC, name


def test_rectify_straightens_leaning_planks_to_the_target_period():
    planks = brick_wall(384, (48, 96)).T.astype(np.float32)  # unbroken vertical lines 48 px apart
    y = np.arange(384)[:, None]
    leaning = planks[y, (np.arange(384)[None, :] + y // 6) % 384]  # they lean by about 9.5°
    assert lattice.continuous(leaning, 48.0, axis=1)
    index = lattice.rectify(leaning, 48.0, 50.0, axis=1)
    straight = leaning[y, index]
    assert 250 < straight.shape[1] <= 384  # the lean costs the corners
    # The lines are vertical and 50 px apart: a column of the result has one phase top to bottom.
    phase = lattice.phase(straight, 50.0, axis=1)[40:-40, straight.shape[1] // 2]
    assert np.percentile(np.abs((phase - phase[150] + 0.5) % 1.0 - 0.5), 90) < 0.1
    assert lattice.detect(straight).period_x == pytest.approx(100, abs=3)  # two courses: the joints are staggered


def test_a_staggered_lattice_is_not_straightened_line_by_line():
    wall = brick_wall(384, (24, 48)).astype(np.float32)  # running bond: joints jump half a brick per course
    assert not lattice.continuous(wall, 48.0, axis=1)
    assert lattice.continuous(skimage.data.brick().astype(np.float32), 36.0, axis=1)
