"""Near-regular textures (brick, tiles, planks): find the lattice, and where each exemplar pixel lies in it.

Detection: the normalised autocorrelation of the luminance (one FFT), read along each axis. An axis
has a period when the autocorrelation, after falling from its central peak, rises again to a clear
peak (height >= PEAK, dip before it >= DIP). Lags within SLANT x the distance off the axis count for
that axis, so a lattice seen in perspective (scikit-image's brick: lines lean up to ±8°, the period
runs from 33 px at the top to 39 px at the bottom) is still found. Stochastic textures (gravel,
grass, tissue) have no such peak. Limit: in a running bond of bricks longer than about 4.8 times
their height, the dip between joints along the courses stays under DIP (the mortar rows dominate), so
only the period across the courses is found.

Phase: where in its period each exemplar pixel lies, measured locally (the angle of a complex
band-pass filter at the lattice frequency), so it follows the perspective instead of assuming one
global grid. The quilter only takes windows whose phase agrees with the output's regular lattice at
that place: rows and joints then continue across block borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from backend.metrics import autocorrelation

PEAK = 0.3  # the autocorrelation peak a period needs (gravel, grass: none above 0.1; brick: 0.5)
DIP = 0.1  # how far the autocorrelation must fall between the centre and that peak
SLANT = 0.15  # lags this far off an axis (per pixel along it) still count for that axis
MAX_LAG = 1 / 3  # periods up to this fraction of the exemplar side are looked for
STAGGER = 0.02  # twice a lag is the period when it correlates this much better
BANDWIDTH = 0.25
SMOOTH = 0.015  # cycles per pixel: the phase change along a lattice line below which it counts as unbroken  # of the phase filter, relative to the lattice frequency (tolerates ±25 % period)


@dataclass(frozen=True)
class Lattice:
    """Periods in exemplar pixels along y and x; None where that axis has none."""

    period_y: float | None
    period_x: float | None
    peak: float  # the autocorrelation peak height that decided it (0 when none)

    @property
    def regular(self) -> bool:
        return self.period_y is not None or self.period_x is not None


STOCHASTIC = Lattice(None, None, 0.0)


def detect(gray: np.ndarray) -> Lattice:
    """The lattice of a (h, w) luminance array, or STOCHASTIC."""
    acf = autocorrelation(gray.astype(np.float64))
    found = [_axis_period(acf, axis, gray.shape[axis]) for axis in (0, 1)]
    periods = [p for p, _ in found]
    if all(p is None for p in periods):
        return STOCHASTIC
    return Lattice(periods[0], periods[1], max(height for _, height in found))


def _axis_period(acf: np.ndarray, axis: int, side: int) -> tuple[float | None, float]:
    """(period, peak height) along one axis: the first clear autocorrelation peak, or (None, 0)."""
    a = acf if axis == 0 else acf.T  # lags along the axis are rows of `a`
    n = int(side * MAX_LAG)
    profile = np.empty(n)
    for k in range(n):  # the best lag within SLANT of the axis, either side
        off = int(SLANT * k)
        profile[k] = max(a[k, :off + 1].max(), a[k, -off:].max() if off else -np.inf)
    peaks = [k for k in range(2, n - 1) if profile[k] >= profile[k - 1] and profile[k] > profile[k + 1]
             and profile[k] >= PEAK and profile[k] - profile[:k].min() >= DIP]
    if not peaks:
        return None, 0.0
    best = max(profile[k] for k in peaks)
    k = next(k for k in peaks if profile[k] >= 0.8 * best)  # the fundamental, not a harmonic
    # A staggered lattice (running bond) nearly repeats after one course, exactly after two: if
    # twice the lag matches better, that is the axis period.
    double = [q for q in peaks if abs(q - 2 * k) <= 2]
    if double and profile[double[0]] > profile[k] + STAGGER:
        k = double[0]
    lo, mid, hi = profile[k - 1], profile[k], profile[k + 1]
    shift = 0.5 * (lo - hi) / (lo - 2 * mid + hi) if lo - 2 * mid + hi < 0 else 0.0  # parabola vertex
    return k + float(shift), float(mid)


def _analytic(gray: np.ndarray, period: float, axis: int) -> np.ndarray:
    """Complex band-pass response at the lattice frequency along one axis (one side: analytic signal)."""
    h, w = gray.shape
    spectrum = scipy.fft.fft2(gray - gray.mean(), workers=-1)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    along, across = (fy, fx) if axis == 0 else (fx, fy)
    f0 = 1.0 / period
    sigma = BANDWIDTH * f0
    return scipy.fft.ifft2(spectrum * np.exp(-((along - f0) ** 2 + across ** 2) / (2 * sigma ** 2)), workers=-1)


def phase(gray: np.ndarray, period: float, axis: int) -> np.ndarray:
    """Local lattice phase in cycles [0, 1) of every pixel along one axis."""
    return (np.angle(_analytic(gray, period, axis)) / (2 * np.pi)) % 1.0


def continuous(gray: np.ndarray, period: float, axis: int) -> bool:
    """Whether the lattice lines across `axis` run on unbroken through the picture (bricks stacked in
    columns, planks, the courses of a wall): their local phase changes by less than SMOOTH cycles
    per pixel along them for 99 % of the picture (its ends, where the filter wraps, left out). False for the joints of a staggered lattice
    (running bond: alternate courses half a period apart), which cannot be straightened line by line."""
    along = phase(gray, period, axis)
    step = np.abs((np.diff(along, axis=1 - axis) + 0.5) % 1.0 - 0.5)
    margin = step.shape[1 - axis] // 10
    step = step[margin:-margin] if axis == 1 else step[:, margin:-margin]
    return bool(np.percentile(step, 99) < SMOOTH)


def rectify(gray: np.ndarray, period: float, target: float, axis: int) -> np.ndarray:
    """Source index along `axis` for every pixel of the rectified exemplar: lines straight, period `target`.

    The local phase, unwrapped along the axis, counts lattice lines; resampling each row (axis=1) or
    column (axis=0) so that this count grows by exactly 1 / target per pixel makes the lines straight,
    evenly spaced and `target` apart: a perspective view of bricks becomes a frontal one. Nearest
    pixels, so the rectified exemplar is made of reference pixels. Shape: gray's, with the axis
    shortened to where every line of the rectified exemplar has a source.
    """
    g = gray if axis == 1 else gray.T
    h, w = g.shape
    turns = np.unwrap(np.angle(_analytic(g, period, 1)), axis=1) / (2 * np.pi)
    middle = np.unwrap(turns[:, w // 2] * 2 * np.pi) / (2 * np.pi)  # rows agree at the middle (mod whole turns)
    turns += (np.round(middle - turns[:, w // 2]))[:, None]
    turns = np.maximum.accumulate(turns, axis=1)  # noise must not make the count go back
    lo, hi = float(turns[:, 0].max()), float(turns[:, -1].min())
    n = max(2, int((hi - lo) * target))
    wanted = lo + np.arange(n) / target
    index = np.stack([np.interp(wanted, row, np.arange(w)) for row in turns])
    index = np.clip(np.rint(index), 0, w - 1).astype(np.int64)
    return index if axis == 1 else index.T
