"""Weight-free texture synthesis on a torus: image quilting with minimum-error cuts closed around it.

Image quilting (Efros & Freeman, SIGGRAPH 2001): the output is laid out as a grid of overlapping
blocks in raster order. Each new block is the exemplar window whose overlap with what is already
there matches best (sum of squared differences, for every window of the exemplar at once with FFT
correlation); the seam inside the overlap follows the minimum-error path, so blocks meet where
they agree. Two changes make it a tool for tileable variants:

- **Closed around the torus.** The grid wraps: the last block of a row also overlaps the first
  block of its row, the last row also overlaps the first row, and their cuts are found the same
  way. The wrap-around border is an interior seam like every other, so the output tiles.
- **No verbatim continuation.** The window that simply continues a neighbouring block in the
  exemplar matches its overlap perfectly, and plain quilting keeps choosing it, which copies the
  exemplar. Windows near such a continuation are excluded, so every block brings a new
  arrangement, and the choice among the near-best windows is random (seeded): the variants.

Guides steer the choice further (docs/PATCH_ENGINE.md): on a near-regular texture only windows in
phase with the output's lattice are taken and cuts follow strong edges (mortar); on every texture
a proportion term keeps the share of each coarse colour region close to the exemplar's.

The result is a map from output pixel to exemplar pixel; the caller reads colour, alpha or any
other channel through it, so what is copied is copied exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft

from backend.errors import CancelledError
from backend.patch.proportions import Proportions

# Windows within CONTINUATION x block of a neighbour's continuation are excluded, and within
# REUSE x block of a window already used (measured in docs/PATCH_ENGINE.md; 0 turns either off).
CONTINUATION = 0.5
REUSE = 0.25
# A window's proportion term (total variation distance of the output's coarse colour histogram
# from the exemplar's once it is added) is weighted against its overlap error per pixel, which is
# in units of the exemplar's variance; 0 turns it off.
PROPORTION_WEIGHT = 2.0
# On a lattice, windows whose local phase is further than this (in cycles) from the output
# lattice's phase at that place are not taken.
PHASE_TOLERANCE = 0.1


@dataclass(frozen=True)
class Layout:
    """Block grid of one axis: block k starts at starts[k] and spans up to starts[k+1] + overlap."""

    starts: tuple[int, ...]
    overlap: int
    wrap: bool
    size: int

    def span(self, k: int) -> int:
        end = self.starts[k + 1] if k + 1 < len(self.starts) else self.size
        return end - self.starts[k] + (self.overlap if (self.wrap or k + 1 < len(self.starts)) else 0)


def layout(size: int, block: int, overlap: int, wrap: bool) -> Layout:
    """Blocks of about `block` pixels that exactly cover `size` (strides differ by at most 1)."""
    n = max(1, round(size / block))
    starts = tuple(int(round(k * size / n)) for k in range(n))
    return Layout(starts=starts, overlap=overlap, wrap=wrap, size=size)


class _Correlator:
    """Sum of squared differences between a masked template and every window of the exemplar."""

    def __init__(self, exemplar: np.ndarray):
        h, w, _ = exemplar.shape
        self.size = (h, w)
        # Only windows that lie inside the exemplar are wanted, and for those a circular
        # correlation of the exemplar's own size is exact: no padding needed.
        self.shape = (scipy.fft.next_fast_len(h, real=True), scipy.fft.next_fast_len(w, real=True))
        planes = np.ascontiguousarray(exemplar.transpose(2, 0, 1))  # (c, h, w)
        self.channels = scipy.fft.rfft2(planes, s=self.shape, workers=-1)
        self.energy = scipy.fft.rfft2((planes ** 2).sum(axis=0), s=self.shape, workers=-1)
        self._mask_spectra: dict[tuple, np.ndarray] = {}  # the few overlap shapes recur: keep them

    def ssd(self, template: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ssd[y, x] = sum over mask of (exemplar[y + i, x + j] - template[i, j])**2, valid windows only."""
        bh, bw = mask.shape
        h, w = self.size
        key = (mask.shape, np.packbits(mask).tobytes())
        mask_spectrum = self._mask_spectra.get(key)
        if mask_spectrum is None:
            mask_spectrum = scipy.fft.rfft2(mask[::-1, ::-1].astype(np.float32), s=self.shape, workers=-1)
            self._mask_spectra[key] = mask_spectrum
        masked = template * mask[..., None]
        # Correlation = convolution with the flipped template; valid windows start at (bh-1, bw-1).
        flipped = scipy.fft.rfft2(np.ascontiguousarray(masked[::-1, ::-1].transpose(2, 0, 1)), s=self.shape,
                                  workers=-1)
        cross = self.channels[0] * flipped[0]
        for k in range(1, len(flipped)):
            cross += self.channels[k] * flipped[k]
        full = scipy.fft.irfft2(self.energy * mask_spectrum - 2.0 * cross, s=self.shape, workers=-1)
        return full[bh - 1:h, bw - 1:w] + float((masked ** 2).sum())


def _min_cut(cost: np.ndarray) -> np.ndarray:
    """Column index of the cheapest top-to-bottom 8-connected path through cost (rows, cols)."""
    rows, cols = cost.shape
    total = cost.astype(np.float64).copy()
    for r in range(1, rows):
        prev = total[r - 1]
        left = np.concatenate(([np.inf], prev[:-1]))
        right = np.concatenate((prev[1:], [np.inf]))
        total[r] += np.minimum(np.minimum(left, prev), right)
    path = np.empty(rows, np.int64)
    path[-1] = int(np.argmin(total[-1]))
    for r in range(rows - 2, -1, -1):
        c = path[r + 1]
        lo, hi = max(0, c - 1), min(cols, c + 2)
        path[r] = lo + int(np.argmin(total[r, lo:hi]))
    return path


def _new_pixels(error: np.ndarray, sides: dict[str, bool], overlap: int) -> np.ndarray:
    """Which pixels of a block the new block takes: past the minimum-error cut on every overlapped side."""
    bh, bw = error.shape
    take = np.ones((bh, bw), bool)
    cols, rows = np.arange(bw)[None, :], np.arange(bh)[:, None]
    if sides["left"]:
        path = _min_cut(error[:, :overlap])
        take &= cols >= path[:, None]
    if sides["right"]:
        path = _min_cut(error[:, bw - overlap:][:, ::-1])
        take &= cols <= (bw - 1 - path)[:, None]
    if sides["top"]:
        path = _min_cut(error[:overlap, :].T)
        take &= rows >= path[None, :]
    if sides["bottom"]:
        path = _min_cut(error[bh - overlap:, :][::-1].T)
        take &= rows <= (bh - 1 - path)[None, :]
    return take


@dataclass(frozen=True)
class Guides:
    """What steers the choice besides the overlap error (docs/PATCH_ENGINE.md).

    phases: per axis (y, x), the exemplar's local lattice phase in cycles (lattice.phase), or None;
    periods: the output lattice period on those axes (the output holds a whole number of them);
    proportions: the exemplar's coarse classes, to keep their share of the output, or None.
    """

    phases: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    periods: tuple[float | None, float | None] = (None, None)
    proportions: Proportions | None = None

    @property
    def regular(self) -> bool:
        return any(p is not None for p in self.phases)


class Quilter:
    """One exemplar, prepared once (its spectra), quilted into as many outputs as asked."""

    def __init__(self, exemplar: np.ndarray, max_block: int, guides: Guides | None = None):
        """exemplar: (h, w, c) float32; max_block: the largest block span (stride + overlap) to be used."""
        h, w, _ = exemplar.shape
        if max_block > min(h, w):
            raise ValueError(f"blocks of {max_block} px do not fit in a {w}x{h} exemplar")
        self.exemplar = exemplar
        self.correlator = _Correlator(exemplar)
        self.guides = guides or Guides()
        self.scale = float(exemplar.var(axis=(0, 1)).sum()) or 1.0  # SSD per pixel of unrelated pixels / 2

    def quilt(self, size: int | tuple[int, int], *, block: int, overlap: int, seed: int, wrap_y: bool = True,
              wrap_x: bool = True, tolerance: float = 0.1,
              on_row: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> np.ndarray:
        """Return (height, width, 2) int exemplar coordinates (y, x) of a quilted texture.

        size: the output's (height, width), or one side for a square; block: block stride in pixels; overlap: overlap width; wrap_y / wrap_x: close the grid
        around the torus on that axis; tolerance: windows within (1 + tolerance) x the best
        cost are equally good, one is drawn at random.
        """
        height, width = (size, size) if isinstance(size, int) else size
        state = _State((height, width), self.exemplar.shape[2], self.guides, np.random.default_rng(seed))
        rows, cols = layout(height, block, overlap, wrap_y), layout(width, block, overlap, wrap_x)
        for i in range(len(rows.starts)):
            for j in range(len(cols.starts)):
                if cancel is not None and cancel.is_set():
                    raise CancelledError()
                self._place(state, rows, cols, (i, j), block, tolerance)
            if on_row is not None:
                on_row(i + 1, len(rows.starts))
        return state.coords

    def _place(self, state: _State, rows: Layout, cols: Layout, at: tuple[int, int], block: int,
               tolerance: float) -> None:
        """Choose block `at`'s exemplar window, cut it in along the cheapest seams and write it."""
        i, j = at
        n_rows, n_cols = len(rows.starts), len(cols.starts)
        height, width = state.coords.shape[:2]
        y0, x0 = rows.starts[i], cols.starts[j]
        bh, bw = rows.span(i), cols.span(j)
        ys, xs = (y0 + np.arange(bh)) % height, (x0 + np.arange(bw)) % width
        known = state.filled[np.ix_(ys, xs)]
        old = state.image[np.ix_(ys, xs)]
        if not known.any():
            cost = np.zeros((self.exemplar.shape[0] - bh + 1, self.exemplar.shape[1] - bw + 1))
        else:
            cost = self.correlator.ssd(old, known) / (self.scale * known.sum())
        cost = cost + self._guide_cost(state, (y0 + bh / 2, x0 + bw / 2), bh, bw)
        allowed = cost.copy()
        radius, reuse = int(block * CONTINUATION), int(block * REUSE)
        if radius:  # not the window that just continues a neighbour as it is in the exemplar
            for di, dj in ((0, -1), (-1, 0), (0, 1), (1, 0)):
                neighbour = ((i + di) % n_rows, (j + dj) % n_cols)
                if neighbour != at and neighbour in state.placed:
                    cy, cx = _continuation(state.placed[neighbour], rows, cols, neighbour, at)
                    _exclude(allowed, cy, cx, radius)
        if reuse:  # nor one already used: repeated features are what the eye spots first
            for uy, ux in state.placed.values():
                _exclude(allowed, uy, ux, reuse)
        if not np.isfinite(allowed).any():  # an exemplar too small for all that
            allowed = cost if np.isfinite(cost).any() else np.zeros_like(cost)
        best = float(allowed.min())
        choices = np.flatnonzero(allowed <= best + abs(best) * tolerance + 1e-9)
        oy, ox = divmod(int(choices[state.rng.integers(len(choices))]), allowed.shape[1])
        if not state.placed:
            state.anchor((oy + bh / 2, ox + bw / 2), (y0 + bh / 2, x0 + bw / 2))
        take = np.ones((bh, bw), bool)
        if known.any():
            window = self.exemplar[oy:oy + bh, ox:ox + bw]
            sides = {"left": bool(known[:, 0].all()), "top": bool(known[0, :].all()),
                     "right": j == n_cols - 1 and bool(known[:, -1].all()),
                     "bottom": i == n_rows - 1 and bool(known[-1, :].all())}
            error = _cut_cost(window, old, self.guides.regular)
            take = _new_pixels(error, sides, rows.overlap) | ~known
        state.placed[at] = (oy, ox)
        state.write(self.exemplar, ys, xs, take, (oy, ox), self.guides.proportions)

    def _guide_cost(self, state: _State, centre: tuple[float, float], bh: int, bw: int) -> np.ndarray | float:
        """Lattice phase (inf where a window is out of phase) and proportion terms, for every window."""
        h, w, _ = self.exemplar.shape
        extra = np.zeros((h - bh + 1, w - bw + 1))
        if self.guides.proportions is not None:
            extra += PROPORTION_WEIGHT * self.guides.proportions.distance_after(state.counts, bh, bw)
        if state.phase0 is None:
            return extra
        for axis, (phase, period) in enumerate(zip(self.guides.phases, self.guides.periods, strict=True)):
            if phase is None:
                continue
            at = phase[bh // 2:bh // 2 + h - bh + 1, bw // 2:bw // 2 + w - bw + 1]
            wanted = state.phase0[axis] + centre[axis] / period
            off = np.abs((at - wanted + 0.5) % 1.0 - 0.5)
            extra[off > PHASE_TOLERANCE] = np.inf
        return extra


class _State:
    """One output in the making: its pixels, their exemplar coordinates, and what steers the next block."""

    def __init__(self, size: tuple[int, int], channels: int, guides: Guides, rng: np.random.Generator):
        self.coords = np.zeros((*size, 2), np.int32)
        self.image = np.zeros((*size, channels), np.float32)
        self.filled = np.zeros(size, bool)
        self.placed: dict[tuple[int, int], tuple[int, int]] = {}  # block (i, j) -> its window origin
        self.rng = rng
        self.guides = guides
        self.labels = np.zeros(size, np.uint8)
        classes = guides.proportions.classes if guides.proportions is not None else 1
        self.counts = np.zeros(classes, np.int64)
        self.phase0: tuple[float, float] | None = None

    def anchor(self, source: tuple[float, float], target: tuple[float, float]) -> None:
        """Fix the output lattice's phase from the first block: its centre keeps its source's phase."""
        phase0 = [0.0, 0.0]
        for axis, (phase, period) in enumerate(zip(self.guides.phases, self.guides.periods, strict=True)):
            if phase is not None:
                here = phase[int(source[0]), int(source[1])]
                phase0[axis] = float(here - target[axis] / period)
        self.phase0 = (phase0[0], phase0[1])

    def write(self, exemplar: np.ndarray, ys, xs, take: np.ndarray, origin, proportions) -> None:
        ty, tx = np.nonzero(take)
        oy, ox = origin
        py, px = ys[ty], xs[tx]
        self.image[py, px] = exemplar[oy + ty, ox + tx]
        self.coords[py, px, 0] = oy + ty
        self.coords[py, px, 1] = ox + tx
        if proportions is not None:
            was = self.labels[py, px][self.filled[py, px]]
            self.counts -= np.bincount(was, minlength=len(self.counts))
            self.labels[py, px] = proportions.labels[oy + ty, ox + tx]
            self.counts += np.bincount(self.labels[py, px], minlength=len(self.counts))
        self.filled[py, px] = True


def _cut_cost(window: np.ndarray, old: np.ndarray, regular: bool) -> np.ndarray:
    """Per-pixel cost of a seam: the squared difference, divided by the local gradient on a lattice.

    On a near-regular texture the division (Kwatra et al. 2003) draws the cut along strong edges,
    the borders of mortar lines and joints, where a seam hides, instead of across a brick face.
    """
    error = ((window - old) ** 2).sum(axis=2)
    if not regular:
        return error
    gradient = sum(np.hypot(*np.gradient(a.mean(axis=2))) for a in (window, old))
    return error / (gradient + 0.1 * float(gradient.mean()) + 1e-6)


def typical_origin(luminance: np.ndarray, wrap_y: bool, wrap_x: bool) -> tuple[int, int]:
    """Where to put the file's edges on a torus: the row and column whose step is the most typical.

    A torus has no privileged origin. Rolling the output so that its edges fall on an unremarkable
    row and column (not on a mortar line of a brick wall, say) changes nothing when it is tiled,
    and makes the edges of the file look like any other place in the texture.
    """
    def pick(axis: int) -> int:
        steps = np.abs(luminance - np.roll(luminance, 1, axis=axis)).mean(axis=1 - axis)
        return int(np.argmin(np.abs(steps - np.median(steps))))

    return (pick(0) if wrap_y else 0), (pick(1) if wrap_x else 0)


def _exclude(error: np.ndarray, y: int, x: int, radius: int) -> None:
    """Rule out the window origins within `radius` (Chebyshev) of (y, x)."""
    error[max(0, y - radius):max(0, y + radius + 1), max(0, x - radius):max(0, x + radius + 1)] = np.inf


def _continuation(origin, rows: Layout, cols: Layout, neighbour, me) -> tuple[int, int]:
    """The exemplar window origin that would continue `neighbour`'s window seamlessly at `me`."""
    (ni, nj), (i, j) = neighbour, me
    dy = _delta(rows, ni, i)
    dx = _delta(cols, nj, j)
    return origin[0] + dy, origin[1] + dx


def _delta(axis: Layout, a: int, b: int) -> int:
    """Output offset from block a's start to block b's start along one axis, the short way round."""
    d = axis.starts[b] - axis.starts[a]
    if axis.wrap and abs(d) > axis.size // 2:
        d -= int(np.sign(d)) * axis.size
    return d
