"""Texture metrics used by tests, benchmarks and the demo (defined in docs/DESIGN.md, "Metrics").

- seam_score: per axis, the mean absolute step across the wrap-around border divided by the median
  step between neighbouring interior columns (x) or rows (y). A seamless tile scores about 1; a crop
  of a photo scores 2-15.
- appearance_distance: sliced Wasserstein distance between the distributions of small patches (at
  three scales) of the output and of the exemplar, divided by the same distance between two halves
  of the exemplar. About 1 means "as close as the exemplar is to itself"; noise scores far above.
- copy_score: the largest normalised cross-correlation, over all offsets, between a half-size window
  of the output and the exemplar (the four quadrant windows and the centre one are tried). A shifted
  copy scores about 1; a real variant scores clearly less.
- structure_distance: mean absolute difference of the normalised autocorrelations (lags up to a
  quarter of the half side) of output and exemplar, divided by the same between two halves of the
  exemplar. About 1 or less = as regular as the exemplar; a broken lattice scores well above.
- proportion_distance: total variation distance between coarse colour histograms (8 px blocks,
  bins at the exemplar's per-channel quartiles) of output and exemplar: 0 = the same mix of regions.

Images are PIL images or arrays (H, W) / (H, W, C) with values in 0..255 (uint8) or 0..1 (float);
alpha is ignored. Everything is deterministic: the random projections and samples are seeded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PATCH = 5  # side of the compared patches, at every scale
SCALES = (1, 2, 4)  # downscale factors at which patches are compared
PROJECTIONS = 64  # random directions of the sliced Wasserstein distance
MAX_PATCHES = 16384  # patches sampled per image and scale
QUANTILES = 512  # points at which two projected distributions are compared


def as_array(image) -> np.ndarray:
    """(H, W, C) float32 in [0, 1], alpha dropped, C = 1 or 3."""
    if isinstance(image, Image.Image):
        if image.mode.startswith("I;16"):  # 16-bit gray: scale, do not clip
            arr = np.asarray(image, dtype=np.float32) / 65535.0
        elif image.mode in ("I", "F"):
            raise ValueError(f"image mode {image.mode} is not supported: use 8- or 16-bit images")
        else:
            arr = np.asarray(image.convert("L" if image.mode in ("L", "LA", "La", "1") else "RGB"),
                             dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or min(arr.shape[:2]) < 3:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), at least 3 x 3, got {arr.shape}")
    if arr.shape[2] in (2, 4):  # LA / RGBA: drop alpha
        arr = arr[..., :-1]
    return arr


def _same_channels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[2] == b.shape[2]:
        return a, b
    return (np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a), (np.repeat(b, 3, axis=2) if b.shape[2] == 1 else b)


# ---------------------------------------------------------------------------------------- seam


def seam_score(image) -> dict[str, float]:
    """{"x": ..., "y": ...}: wrap-around step / median interior step, per axis (≈1 = seamless)."""
    arr = as_array(image)
    return {"x": _seam(arr, axis=1), "y": _seam(arr, axis=0)}


def _seam(arr: np.ndarray, axis: int) -> float:
    # Steps between neighbouring rows (axis 0) or columns (axis 1), averaged along the other axis and
    # the channels; computed in the image's own memory order (a moved axis would be a strided copy).
    h, w, c = arr.shape
    if axis == 0:
        interior = np.abs(arr[1:] - arr[:-1]).reshape(h - 1, w * c).mean(axis=1)
        wrap = float(np.abs(arr[0] - arr[-1]).mean())
    else:
        interior = np.abs(arr[:, 1:] - arr[:, :-1]).sum(axis=0).sum(axis=1) / (h * c)
        wrap = float(np.abs(arr[:, 0] - arr[:, -1]).mean())
    typical = float(np.median(interior))
    if typical == 0.0:
        return 1.0 if wrap == 0.0 else float("inf")
    return wrap / typical


# ----------------------------------------------------------------------------- appearance


def appearance_distance(output, exemplar) -> float:
    """SW distance of multi-scale patch distributions, output vs exemplar, over exemplar half vs half."""
    out, ex = _same_channels(as_array(output), as_array(exemplar))
    between, halves = patch_distance(out, ex), half_distance(ex)
    if halves == 0.0:  # a flat exemplar: only a flat output of the same value is at distance 0
        return 1.0 if between == 0.0 else float("inf")
    return between / halves


def patch_distance(a: np.ndarray, b: np.ndarray, samples: int = MAX_PATCHES, projections: int = PROJECTIONS) -> float:
    """Sliced Wasserstein distance of the multi-scale patch distributions of two (H, W, C) arrays."""
    rng = np.random.default_rng(0)
    levels = (np.arange(QUANTILES) + 0.5) / QUANTILES
    total = 0.0
    for scale in SCALES:
        pa, pb = _patches(_downscale(a, scale), rng, samples), _patches(_downscale(b, scale), rng, samples)
        if pa is None or pb is None:
            continue
        directions = rng.standard_normal((pa.shape[1], projections)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        total += float(np.abs(_quantiles(pa @ directions, levels) - _quantiles(pb @ directions, levels)).mean())
    return total


def half_distance(exemplar: np.ndarray, samples: int = MAX_PATCHES, projections: int = PROJECTIONS) -> float:
    """The exemplar's own patch distance, left half to right and top to bottom (the unit of appearance)."""
    h, w = exemplar.shape[:2]
    return 0.5 * (patch_distance(exemplar[:, : w // 2], exemplar[:, w // 2:], samples, projections)
                  + patch_distance(exemplar[: h // 2], exemplar[h // 2:], samples, projections))


def _quantiles(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantiles of each column at `levels`: (len(levels), columns)."""
    values = np.sort(np.ascontiguousarray(values.T), axis=1)  # sorting contiguous rows is much faster
    position = levels * (values.shape[1] - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, values.shape[1] - 1)
    t = position - lo
    return (values[:, lo] * (1 - t) + values[:, hi] * t).T


def _downscale(arr: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return arr
    h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    return arr[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def _patches(arr: np.ndarray, rng: np.random.Generator, samples: int = MAX_PATCHES) -> np.ndarray | None:
    """Up to `samples` random PATCH x PATCH patches, flattened: (n, PATCH * PATCH * C)."""
    h, w, c = arr.shape
    if h < PATCH or w < PATCH:
        return None
    ny, nx = h - PATCH + 1, w - PATCH + 1
    index = np.arange(ny * nx) if ny * nx <= samples else rng.choice(ny * nx, samples, replace=False)
    ys, xs = np.divmod(index, nx)
    offsets = np.arange(PATCH)
    patches = arr[(ys[:, None] + offsets)[:, :, None], (xs[:, None] + offsets)[:, None, :]]  # (n, P, P, C)
    return patches.reshape(len(index), -1).astype(np.float32)


# ----------------------------------------------------------------------------------- copy


def copy_score(output, exemplar) -> float:
    """Max normalised cross-correlation of half-size output windows with the exemplar, all offsets."""
    out, ex = _same_channels(as_array(output), as_array(exemplar))
    h, w = out.shape[:2]
    wh, ww = min(h // 2, ex.shape[0]), min(w // 2, ex.shape[1])
    corners = [(0, 0), (0, w - ww), (h - wh, 0), (h - wh, w - ww), ((h - wh) // 2, (w - ww) // 2)]
    ncc = _NormalisedCorrelation(ex.astype(np.float64), wh, ww)
    return max(ncc.max(out[y:y + wh, x:x + ww]) for y, x in corners)


class _NormalisedCorrelation:
    """NCC of (wh, ww, C) templates with every valid window of one image, by FFT and integral images."""

    def __init__(self, image: np.ndarray, wh: int, ww: int):
        import scipy.fft

        self.fft = scipy.fft
        h, w, c = image.shape
        self.size = (h, w)
        self.window = (wh, ww)
        self.shape = (scipy.fft.next_fast_len(h + wh - 1), scipy.fft.next_fast_len(w + ww - 1))
        self.spectrum = scipy.fft.rfft2(image, s=self.shape, axes=(0, 1), workers=-1)
        n = wh * ww * c
        window_sum = _box_sum(image.sum(axis=2), wh, ww)
        window_sq = _box_sum((image ** 2).sum(axis=2), wh, ww)
        self.variance = np.maximum(window_sq - window_sum ** 2 / n, 0.0)  # n * variance of each window

    def max(self, template: np.ndarray) -> float:
        wh, ww = self.window
        h, w = self.size
        t = template.astype(np.float64) - template.mean()
        t_energy = float((t ** 2).sum())
        if t_energy < 1e-12:  # a flat window correlates with nothing
            return 0.0
        flipped = self.fft.rfft2(t[::-1, ::-1], s=self.shape, axes=(0, 1), workers=-1)
        corr = self.fft.irfft2((self.spectrum * flipped).sum(axis=2), s=self.shape, workers=-1)
        corr = corr[wh - 1:h, ww - 1:w]
        denominator = np.sqrt(self.variance * t_energy)
        ncc = np.where(denominator > 1e-9, corr / np.maximum(denominator, 1e-9), 0.0)
        return float(ncc.max())


def _box_sum(arr: np.ndarray, wh: int, ww: int) -> np.ndarray:
    """Sum of every wh x ww window (valid positions), from an integral image."""
    integral = np.pad(arr, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return integral[wh:, ww:] - integral[:-wh, ww:] - integral[wh:, :-ww] + integral[:-wh, :-ww]



# ------------------------------------------------------------------------------ structure

STRUCTURE_LAG = 0.25  # lags compared: up to this fraction of the shorter side of the images compared


def structure_distance(output, exemplar) -> float:
    """Mean |autocorrelation(output) - autocorrelation(exemplar)| over lags up to STRUCTURE_LAG of the
    side, over the same distance between two halves of the exemplar: ≈1 or less = as regular as
    the exemplar is with itself; a broken lattice (bricks cut, mortar lines kinked) scores high."""
    out, ex = _same_channels(as_array(output), as_array(exemplar))
    h, w = ex.shape[:2]
    lag = max(1, int(STRUCTURE_LAG * min(h // 2, w // 2, *out.shape[:2])))
    between = _acf_distance(out, ex, lag)
    halves = 0.5 * (_acf_distance(ex[:, : w // 2], ex[:, w // 2:], lag)
                    + _acf_distance(ex[: h // 2], ex[h // 2:], lag))
    if halves == 0.0:
        return 1.0 if between == 0.0 else float("inf")
    return between / halves


def _acf_distance(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    return float(np.abs(_autocorrelation(a, lag) - _autocorrelation(b, lag)).mean())


def autocorrelation(gray: np.ndarray) -> np.ndarray:
    """Normalised (1 at lag 0), Hann-windowed autocorrelation of a (h, w) array, zero-padded (no
    wrap); lag (dy, dx) at index [dy, dx] (mod (2h, 2w)). A flat array gives zeros."""
    import scipy.fft

    h, w = gray.shape
    g = (gray - gray.mean()) * np.outer(np.hanning(h), np.hanning(w))
    acf = scipy.fft.irfft2(np.abs(scipy.fft.rfft2(g, s=(2 * h, 2 * w), workers=-1)) ** 2, s=(2 * h, 2 * w),
                           workers=-1)
    return acf / acf[0, 0] if acf[0, 0] > 0 else np.zeros_like(acf)


def repetition(image, period: int) -> float:
    """How much a large surface repeats at `period` px: the mean of the luminance's normalised
    autocorrelation at lags (0, period) and (period, 0). A plain repeat of one tile scores about 1
    (less only by the window), a repetition-free surface about its texture's own correlation there."""
    acf = autocorrelation(as_array(image).mean(axis=2))
    return float((acf[0, period] + acf[period, 0]) / 2)


def _autocorrelation(arr: np.ndarray, lag: int) -> np.ndarray:
    """The luminance's autocorrelation at lags (-lag..lag)²."""
    acf = np.roll(autocorrelation(arr.mean(axis=2)), (lag, lag), axis=(0, 1))
    return acf[: 2 * lag + 1, : 2 * lag + 1]


# ---------------------------------------------------------------------------- proportions

PROPORTION_BLOCK = 8  # images are averaged over blocks of this side first: regions, not grain
PROPORTION_LEVELS = 4  # bins per channel, at the exemplar's own quantiles (4 x 4 x 4 in colour)


def proportion_distance(output, exemplar) -> float:
    """Total variation distance (0 = same, 1 = disjoint) between coarse colour histograms of the
    output and the exemplar: the share of the picture whose colour region would have to change."""
    out, ex = _same_channels(as_array(output), as_array(exemplar))
    levels = PROPORTION_LEVELS if ex.shape[2] == 3 else PROPORTION_LEVELS ** 2
    coarse_ex, coarse_out = _downscale(ex, PROPORTION_BLOCK), _downscale(out, PROPORTION_BLOCK)
    if min(coarse_ex.shape[:2]) == 0 or min(coarse_out.shape[:2]) == 0:
        coarse_ex, coarse_out = ex, out
    edges = [np.quantile(coarse_ex[..., c], np.arange(1, levels) / levels) for c in range(ex.shape[2])]

    def histogram(arr):
        index = np.zeros(arr.shape[:2], np.int64)
        for c, e in enumerate(edges):
            index = index * levels + np.searchsorted(e, arr[..., c], side="right")
        counts = np.bincount(index.ravel(), minlength=levels ** arr.shape[2])
        return counts / counts.sum()

    return 0.5 * float(np.abs(histogram(coarse_out) - histogram(coarse_ex)).sum())


def texture_metrics(output, exemplar) -> dict[str, float]:
    """All metrics of one output: seam_x, seam_y, appearance, copy, structure, proportion."""
    seam = seam_score(output)
    return {"seam_x": seam["x"], "seam_y": seam["y"],
            "appearance": appearance_distance(output, exemplar), "copy": copy_score(output, exemplar),
            "structure": structure_distance(output, exemplar),
            "proportion": proportion_distance(output, exemplar)}


# ------------------------------------------------------------------------------ brick integrity

JOINT_SLACK = 1.05  # a brick longer than this x the longest source brick has lost a joint
TONE_SLACK = 1.5  # two-toned: its thirds differ by more than this x the most any source brick's do
SPECK = 0.2  # pieces smaller than this x the median source brick are not counted as bricks


def brick_integrity(output, exemplar) -> dict[str, float]:
    """Whether the output's bricks are whole: bricks are the pieces between the joints (mortar: the
    smaller of the two Otsu classes of the exemplar's luminance), on the torus for the output, whole
    ones only (not touching the border) for the exemplar. Bricks run along the axis along which the
    exemplar's are longer. A brick is two-toned when the mean colours of its first and last thirds
    along its length differ more than TONE_SLACK x the most they do in any source brick (the slack
absorbs resampling; two bricks' faces differ far more), joint-less when it is longer than
    JOINT_SLACK x the longest source brick. Returns bricks, two_toned, jointless and bad (the share
    of bricks that are either)."""
    ex, out = _same_channels(as_array(exemplar), as_array(output))
    threshold = _otsu(ex.mean(axis=2))
    light = ex.mean(axis=2) > threshold
    mortar_is_light = light.mean() < 0.5
    ex_pieces = _pieces(ex, threshold, mortar_is_light, wrap=False)
    if not ex_pieces:
        raise ValueError("the exemplar shows no whole bricks between joints")
    along = 0 if np.median([p[0].shape[0] / p[0].shape[1] for p in ex_pieces]) > 1 else 1
    areas = [p[0].sum() for p in ex_pieces]
    small = SPECK * float(np.median(areas))
    source = [(_length(m, along), _tones(m, c, along)) for m, c in ex_pieces if m.sum() >= small]
    longest, varied = max(s[0] for s in source), TONE_SLACK * max(s[1] for s in source)
    bricks = [(_length(m, along), _tones(m, c, along))
              for m, c in _pieces(out, threshold, mortar_is_light, wrap=True) if m.sum() >= small]
    two_toned = sum(tones > varied for _, tones in bricks)
    jointless = sum(length > JOINT_SLACK * longest for length, _ in bricks)
    bad = sum(tones > varied or length > JOINT_SLACK * longest for length, tones in bricks)
    return {"bricks": len(bricks), "two_toned": two_toned, "jointless": jointless,
            "bad": bad / max(1, len(bricks))}


def _otsu(gray: np.ndarray) -> float:
    counts, edges = np.histogram(gray, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    between = (total_mean * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centres[np.argmax(between)])


def _pieces(arr: np.ndarray, threshold: float, mortar_is_light: bool, wrap: bool) -> list:
    """[(mask, colours)] of the bricks: each a crop (its bounding box; on the torus for `wrap`)."""
    from scipy import ndimage

    gray = ndimage.median_filter(arr.mean(axis=2), size=3, mode="wrap" if wrap else "nearest")
    brick = gray <= threshold if mortar_is_light else gray > threshold
    h, w = brick.shape
    if wrap:  # label three by three copies and keep the pieces that start in the middle copy
        big = np.tile(brick, (3, 3))
        labels, _ = ndimage.label(big)
        colours = np.tile(arr, (3, 3, 1))
        out = []
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None or not (h <= box[0].start < 2 * h and w <= box[1].start < 2 * w):
                continue
            out.append((labels[box] == index, colours[box]))
        return out
    labels, _ = ndimage.label(brick)
    return [(labels[box] == index, arr[box]) for index, box in enumerate(ndimage.find_objects(labels), start=1)
            if box is not None and box[0].start > 0 and box[1].start > 0 and box[0].stop < h and box[1].stop < w]


def _length(mask: np.ndarray, along: int) -> int:
    return int(mask.any(axis=1 - along).sum())


def _tones(mask: np.ndarray, colours: np.ndarray, along: int) -> float:
    """The largest channel difference between the mean colours of the first and last thirds."""
    n = mask.shape[along]
    third = max(1, n // 3)
    first = [slice(None)] * 2
    last = [slice(None)] * 2
    first[along], last[along] = slice(0, third), slice(n - third, n)
    a, b = mask[tuple(first)], mask[tuple(last)]
    if not a.any() or not b.any():
        return 0.0
    return float(np.abs(colours[tuple(first)][a].mean(axis=0) - colours[tuple(last)][b].mean(axis=0)).max())
