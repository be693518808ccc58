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

# Windows within CONTINUATION x block of a neighbour's continuation are excluded, and within
# REUSE x block of a window already used (measured in docs/PATCH_ENGINE.md; 0 turns either off).
CONTINUATION = 0.5
REUSE = 0.25


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


class Quilter:
    """One exemplar, prepared once (its spectra), quilted into as many outputs as asked."""

    def __init__(self, exemplar: np.ndarray, max_block: int):
        """exemplar: (h, w, c) float32; max_block: the largest block span (stride + overlap) to be used."""
        h, w, _ = exemplar.shape
        if max_block > min(h, w):
            raise ValueError(f"blocks of {max_block} px do not fit in a {w}x{h} exemplar")
        self.exemplar = exemplar
        self.correlator = _Correlator(exemplar)

    def quilt(self, size: int, *, block: int, overlap: int, seed: int, wrap_y: bool = True,
              wrap_x: bool = True, tolerance: float = 0.1,
              on_row: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> np.ndarray:
        """Return (size, size, 2) int exemplar coordinates (y, x) of a quilted texture.

        block: block stride in pixels; overlap: overlap width; wrap_y / wrap_x: close the grid
        around the torus on that axis; tolerance: windows within (1 + tolerance) x the best
        overlap error are equally good, one is drawn at random.
        """
        exemplar = self.exemplar
        rng = np.random.default_rng(seed)
        h, w, _ = exemplar.shape
        rows, cols = layout(size, block, overlap, wrap_y), layout(size, block, overlap, wrap_x)
        coords = np.zeros((size, size, 2), np.int64)
        image = np.zeros((size, size, exemplar.shape[2]), np.float32)
        filled = np.zeros((size, size), bool)
        placed: dict[tuple[int, int], tuple[int, int]] = {}  # block (i, j) -> its exemplar window origin
        n_rows, n_cols = len(rows.starts), len(cols.starts)
        radius, reuse = int(block * CONTINUATION), int(block * REUSE)
        for i in range(n_rows):
            for j in range(n_cols):
                if cancel is not None and cancel.is_set():
                    raise CancelledError()
                y0, x0 = rows.starts[i], cols.starts[j]
                bh, bw = rows.span(i), cols.span(j)
                ys, xs = (y0 + np.arange(bh)) % size, (x0 + np.arange(bw)) % size
                known = filled[np.ix_(ys, xs)]
                old = image[np.ix_(ys, xs)]
                if not known.any():
                    origin = (int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)))
                    take = np.ones((bh, bw), bool)
                else:
                    ssd = self.correlator.ssd(old, known)
                    error = ssd.copy()
                    if radius:  # not the window that just continues a neighbour as it is in the exemplar
                        for di, dj in ((0, -1), (-1, 0), (0, 1), (1, 0)):
                            neighbour = ((i + di) % n_rows, (j + dj) % n_cols)
                            if neighbour != (i, j) and neighbour in placed:
                                cy, cx = _continuation(placed[neighbour], rows, cols, neighbour, (i, j))
                                _exclude(error, cy, cx, radius)
                    if reuse:  # nor one already used: repeated features are what the eye spots first
                        for uy, ux in placed.values():
                            _exclude(error, uy, ux, reuse)
                    if not np.isfinite(error).any():  # an exemplar too small for all that
                        error = ssd
                    best = float(error.min())
                    choices = np.flatnonzero(error <= best + abs(best) * tolerance + 1e-6)
                    origin = divmod(int(choices[rng.integers(len(choices))]), error.shape[1])
                    window = exemplar[origin[0]:origin[0] + bh, origin[1]:origin[1] + bw]
                    sides = {"left": bool(known[:, 0].all()), "top": bool(known[0, :].all()),
                             "right": j == n_cols - 1 and bool(known[:, -1].all()),
                             "bottom": i == n_rows - 1 and bool(known[-1, :].all())}
                    take = _new_pixels(((window - old) ** 2).sum(axis=2), sides, overlap) | ~known
                placed[(i, j)] = origin
                ty, tx = np.nonzero(take)
                oy, ox = origin
                image[ys[ty], xs[tx]] = exemplar[oy + ty, ox + tx]
                coords[ys[ty], xs[tx], 0] = oy + ty
                coords[ys[ty], xs[tx], 1] = ox + tx
                filled[ys[ty], xs[tx]] = True
            if on_row is not None:
                on_row(i + 1, n_rows)
        return coords


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
