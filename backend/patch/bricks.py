"""Whole bricks: a wall rearranged brick by brick instead of block by block (docs/PATCH_ENGINE.md).

For a near-regular texture whose lattice runs across its courses (brick, pavers, planks in
courses), blocks cut bricks: a block border across a brick makes it two-toned, one that meets
another brick's face makes a brick with no joint. Here the rectified exemplar (lattice.rectify:
straight courses, a whole number of them in the output) is cut into cells along its joints, and
the output is laid from whole cells:

1. mortar: the smaller of the two Otsu classes of the luminance (bricks are the larger one);
   courses: bands one period tall, from the middle of one bed joint to the middle of the next (the
   phase at which the rows' mean luminance stands out most, lighter or darker); cells: within a band, from the middle of one head joint (a column
   where most of the band's middle rows are mortar) to the middle of the next, each a whole brick
   with half of each joint around it. Pieces cut by the exemplar's border are not cells, nor are
   cells with a joint open at an end (a face row with no mortar in it: it would join the brick to
   whatever the output puts next to it);
2. each output course (the output holds a whole number of periods) is a loop of cells whose lengths
   add up to the output's side exactly: cells are drawn in a seeded order, least used first, while
   they fit; the rest is closed by swapping one cell for an unused one of exactly the right length
   (matching by size); when no such cell exists the course is resampled to the side (nearest
   pixels, a scale within a few per cent). Each course starts at a seeded offset, so head joints
   are staggered from course to course;
3. every cell keeps its course band (rows and bed joints line up), and a course closes on itself,
   so bed and head joints continue across the wrap on both axes.

`find` returns None (the quilter takes over) when the picture does not look like that: no mortar
class between 5 and 40 % of the picture, bed joints not clearly mortar, or too few cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MORTAR_SHARE = (0.05, 0.4)  # mortar's share of the picture for a wall
BED_JOINT = 1.0  # how far (in standard deviations of all rows) a bed joint's luminance stands out
HEAD_JOINT = 0.75  # mortar share of a head-joint column in a band's middle rows
MIN_CELLS = 8
LONGEST = 1.8  # cells longer than this x the median cell are two bricks whose joint was not seen


@dataclass(frozen=True)
class Cell:
    band: int  # first row of its course band in the (course-frame) exemplar
    start: int  # first column (the middle of its left head joint)
    length: int


@dataclass(frozen=True)
class Courses:
    across: int  # the exemplar axis across the courses (0: courses are rows)
    period: float  # the course period in output pixels (a whole number of them fills the side)
    cells: tuple[Cell, ...]


def find(gray: np.ndarray, periods: tuple[float | None, float | None]) -> Courses | None:
    """The courses and cells of the (rectified) exemplar's luminance, or None."""
    from backend.metrics import _otsu

    g = (gray - gray.min()) / max(1e-6, float(np.ptp(gray)))
    threshold = _otsu(g)
    light = g > threshold
    mortar = light if light.mean() < 0.5 else ~light
    if not MORTAR_SHARE[0] <= mortar.mean() <= MORTAR_SHARE[1]:
        return None
    found = [_cells(mortar if axis == 0 else mortar.T, g if axis == 0 else g.T, p)
             for axis, p in enumerate(periods) if p is not None]
    best = max(((len(c), axis, c) for c, axis in zip(found, [a for a, p in enumerate(periods) if p is not None],
                                                         strict=True) if c), default=None)
    if best is None or best[0] < MIN_CELLS:
        return None
    _, axis, cells = best
    typical = float(np.median([c.length for c in cells]))
    cells = [c for c in cells if c.length <= LONGEST * typical]  # longer: a head joint was missed
    return Courses(axis, float(periods[axis]), tuple(cells))


def _cells(mortar: np.ndarray, gray: np.ndarray, period: float) -> list[Cell]:
    """Cells of a mortar mask whose courses are rows, `period` rows apart; the bed joints are the rows
    whose mean luminance stands out most, lighter or darker, at that period (a photo's bed joints
    may be shadowed lines rather than mortar)."""
    h, w = mortar.shape
    rows = gray.mean(axis=1)
    n = int(h // period)
    if n < 2:
        return []
    phase = [rows[np.clip(np.round(o + np.arange(n) * period).astype(int), 0, h - 1)].mean()
             for o in range(int(np.ceil(period)))]
    scores = np.abs(np.array(phase) - rows.mean()) / max(1e-6, float(rows.std()))
    offset = int(np.argmax(scores))
    if scores[offset] < BED_JOINT:
        return []
    cells = []
    band_height = int(np.ceil(period)) + 1
    for k in range(n + 1):
        top = int(round(offset + k * period))
        if top + band_height > h:
            break
        middle = mortar[top + band_height // 4: top + band_height - band_height // 4]
        runs = _runs(middle.mean(axis=0) > HEAD_JOINT)
        band = mortar[top:top + band_height]
        faces = band[band.mean(axis=1) < 0.5]  # the band's rows between its bed joints
        # a joint is whole when every face row has mortar in it: one open at an end would join the
        # bricks on either side of the cut to whatever face the output puts next to them
        whole = [bool(faces[:, max(0, a - 1):b + 1].any(axis=1).all()) for a, b in runs]
        centres = [(a + b - 1) // 2 for a, b in runs]
        pairs = zip(centres, centres[1:], whole, whole[1:], strict=False)
        cells += [Cell(top, a, b - a) for a, b, ok_a, ok_b in pairs if b - a >= 3 and ok_a and ok_b]
    return cells


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True (runs touching the ends left out)."""
    edges = np.flatnonzero(np.diff(flags.astype(np.int8)))
    starts, stops = edges[flags[edges + 1]] + 1, edges[~flags[edges + 1]] + 1
    runs = []
    for start in starts:
        after = stops[stops > start]
        if len(after):
            runs.append((int(start), int(after[0])))
    return runs


def lay(courses: Courses, size: int | tuple[int, int], seed: int) -> np.ndarray:
    """(height, width, 2) int coordinates into the exemplar: whole cells, course by course; `size` is
    the output's (height, width), or one side for a square."""
    rng = np.random.default_rng(seed)
    cells = courses.cells
    lengths = np.array([c.length for c in cells])
    used = np.zeros(len(cells), int)
    height, width = (size, size) if isinstance(size, int) else size
    across, size = (height, width) if courses.across == 0 else (width, height)  # size: a course's length
    n = int(round(across / courses.period))
    out = np.zeros((across, size, 2), np.int64)  # in the course frame: rows across the courses
    for k in range(n):
        top, bottom = int(round(k * across / n)), int(round((k + 1) * across / n))
        loop = _course(lengths, used, size, rng)
        ys, xs = [], []
        for index in loop:
            cell = cells[index]
            xs.append(cell.start + np.arange(cell.length))
            ys.append(np.full(cell.length, cell.band))
        col_x, band = np.concatenate(xs), np.concatenate(ys)
        if len(col_x) != size:  # no exact fit: the course resampled to the side
            pick = np.minimum((np.arange(size) * len(col_x)) // size, len(col_x) - 1)
            col_x, band = col_x[pick], band[pick]
        shift = int(rng.integers(0, size))
        col_x, band = np.roll(col_x, shift), np.roll(band, shift)
        rows = np.arange(bottom - top)
        out[top:bottom, :, 0] = band[None, :] + rows[:, None]
        out[top:bottom, :, 1] = col_x[None, :]
    return out if courses.across == 0 else out.transpose(1, 0, 2)[..., ::-1]


def _course(lengths: np.ndarray, used: np.ndarray, size: int, rng) -> list[int]:
    """Cell indices whose lengths add up to `size` (or as close below as drawing allows)."""
    order = np.lexsort((rng.random(len(lengths)), used))  # least used first, seeded among equals
    loop, total = [], 0
    for index in order:
        if total + lengths[index] <= size:
            loop.append(int(index))
            total += int(lengths[index])
        if size - total < lengths.min():
            break
    rest = size - total
    if rest:
        chosen = set(loop)
        for i in rng.permutation(len(loop)):
            fits = np.flatnonzero((lengths == lengths[loop[i]] + rest) & ~np.isin(np.arange(len(lengths)), list(chosen)))
            if len(fits):
                loop[i] = int(fits[np.argmin(used[fits])])
                break
    for index in loop:
        used[index] += 1
    rng.shuffle(loop)
    return loop
