"""The report card of a variant: does it tile, is it new, does it look like its reference?

Three numbers an artist can read at a glance, each with a verdict, cheap enough to compute for every
variant and map (a few per cent of what making the variant costs):

- seam (per tiled axis): the mean step across the wrap-around border over the median step between
  neighbouring columns (rows) inside the image (metrics.seam_score): about 1 when the border is as
  smooth as the image's own steps, 2-15 on a photo crop. Verdict `tiles`: ≤ SEAM_LIMIT on every
  tiled axis.
- novelty: 1 - the best normalised cross-correlation of the variant with the reference over every
  cyclic shift (FFT on the variant's torus), so a shifted copy scores about 0 and an unrelated
  texture about 1. Verdict `new`: ≥ NOVELTY_LIMIT.
- look: metrics.appearance_distance (multi-scale patch statistics against the reference's own
  half-to-half distance), on a small analysis copy with fewer samples: about 1 or less means as
  close as the reference is to itself, noise scores about 6. Verdict `same_look`: ≤ LOOK_LIMIT.
- clip (diffusion engine only): cosine of the CLIP image embeddings of reference and variant from
  the IP-Adapter's own image encoder, when it is loaded (no extra model).

Fidelity gate of few-step sampling: a variant made with `sampler="fast"` (4-8 steps of a
step-distillation LoRA) carries `remake_full` in its card, true exactly when its `same_look` verdict
fails: the few steps did not keep the reference's look, so the artist is told to make it again with
the full sampler (`few_step_gate`; docs/guide/speed-and-quality.md says what is and is not known).

Novelty and look are computed at an analysis size of about ANALYSIS px on the short side (box
averages over whole blocks, so a roll of the variant by whole blocks is a roll of the analysis
copy); every block phase of the reference is tried, so a copy shifted by any number of pixels is
found. `Judge` keeps what depends on the reference only, for the variants of one call.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from backend import metrics

ANALYSIS = 128  # px on the analysis copy's short side
SEAM_LIMIT = 1.5  # tiles: wrap step at most 1.5 x the median interior step (a photo crop scores 2-15)
NOVELTY_LIMIT = 0.2  # new: no cyclic shift of the variant correlates with the reference above 0.8
LOOK_LIMIT = 1.5  # same look: patch statistics within 1.5 x the reference's own half-to-half distance
LOOK_SAMPLES, LOOK_PROJECTIONS = 1024, 32  # of metrics' 16384 and 64: the card is a glance, not the metric

AXES = {"both": ("x", "y"), "x": ("x",), "y": ("y",), "none": ()}


def _gray(arr: np.ndarray) -> np.ndarray:
    return arr.mean(axis=2) if arr.shape[2] > 1 else arr[..., 0]


def _box(arr: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks (the image's size a multiple of factor: the caller crops)."""
    if factor == 1:
        return arr
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    blocks = arr[: h * factor, : w * factor].reshape(h, factor, w, factor, *arr.shape[2:])
    return blocks.sum(axis=1).sum(axis=2) / factor ** 2  # one axis at a time: far faster than mean((1, 3))


def _box_filter(arr: np.ndarray, factor: int) -> np.ndarray:
    """The mean of the factor x factor window starting at every pixel, wrapping around."""
    padded = np.pad(arr.astype(np.float32), ((0, factor - 1), (0, factor - 1)), mode="wrap")
    integral = np.pad(padded, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return (integral[factor:, factor:] - integral[:-factor, factor:] - integral[factor:, :-factor]
            + integral[:-factor, :-factor]) / factor ** 2


def _at_scale(reference: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The reference scaled so its short side is the variant's (as the engines present it), then its
    centre cut to at most the variant's size."""
    from PIL import Image

    h, w = reference.shape[:2]
    scale = min(shape) / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        channels = [np.asarray(Image.fromarray(reference[..., c]).resize(size, Image.Resampling.LANCZOS))
                    for c in range(reference.shape[2])]
        reference = np.stack(channels, axis=2)
    h, w = reference.shape[:2]
    ch, cw = min(h, shape[0]), min(w, shape[1])
    y, x = (h - ch) // 2, (w - cw) // 2
    return reference[y:y + ch, x:x + cw]


class Judge:
    """The card of any number of images against one reference (an array or PIL image, any size)."""

    def __init__(self, reference, tile: str = "both"):
        self.reference = metrics.as_array(reference)
        self.axes = AXES[tile]
        self._scaled: dict[tuple, tuple] = {}  # by the judged image's (shape, channels)

    def card(self, image, clip: float | None = None) -> dict:
        arr = metrics.as_array(image)
        seam = metrics.seam_score(arr)
        novelty, look = self._against_reference(arr)
        out = {"seam": {axis: round(seam[axis], 3) for axis in self.axes},
               "novelty": round(novelty, 3), "look": round(look, 3)}
        out["tiles"] = all(seam[axis] <= SEAM_LIMIT for axis in self.axes)
        out["new"] = novelty >= NOVELTY_LIMIT
        out["same_look"] = look <= LOOK_LIMIT
        if clip is not None:
            out["clip"] = round(float(clip), 4)
        return out

    def _reference_for(self, arr: np.ndarray):
        """What the card needs of the reference at this image's size and channels, computed once."""
        key = (arr.shape[:2], arr.shape[2])
        if key not in self._scaled:
            factor = max(1, min(arr.shape[:2]) // ANALYSIS)
            ref = _at_scale(self.reference, arr.shape[:2])
            if ref.shape[2] != arr.shape[2]:  # a grey variant of a colour reference, or the other way
                ref = ref.mean(axis=2, keepdims=True) if arr.shape[2] == 1 else np.repeat(ref, arr.shape[2], axis=2)
            h, w = (ref.shape[0] // factor) * factor, (ref.shape[1] // factor) * factor
            shape = (arr.shape[0] // factor, arr.shape[1] // factor)
            # every block phase: a copy shifted by any pixel count matches one of them block for block
            boxed = _box_filter(_gray(ref), factor)
            templates = [boxed[dy:dy + h:factor, dx:dx + w:factor] for dy in range(factor) for dx in range(factor)]
            small = _box(ref[:h, :w], factor)
            h2, w2 = small.shape[0] // 2, small.shape[1] // 2
            halves = 0.5 * (_LookProfile(small[:, :w2]).distance(small[:, w2:])
                            + _LookProfile(small[:h2]).distance(small[h2:]))
            self._scaled[key] = (factor, _Templates(templates, shape), _LookProfile(small), halves)
        return self._scaled[key]

    def _against_reference(self, arr: np.ndarray) -> tuple[float, float]:
        factor, templates, profile, halves = self._reference_for(arr)
        h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
        small = _box(arr[:h, :w], factor)
        between = profile.distance(small)
        look = (1.0 if between == 0.0 else math.inf) if halves == 0.0 else between / halves
        return float(min(1.0, max(0.0, 1.0 - templates.best_ncc(_gray(small))))), float(look)


class _Templates:
    """Zero-mean templates (h, w) of the reference, matched against every cyclic window of a torus
    (H, W) by normalised cross-correlation: the variant is periodic, so every shift wraps around."""

    def __init__(self, templates: list[np.ndarray], shape: tuple[int, int]):
        self.shape = shape
        self.size = templates[0].size
        centred = [t - t.mean() for t in templates]
        self.energy = [float((t ** 2).sum()) for t in centred]
        self.spectra = [np.conj(scipy.fft.rfft2(t, s=shape)) for t in centred]
        self.ones = np.conj(scipy.fft.rfft2(np.ones(templates[0].shape), s=shape))

    def best_ncc(self, torus: np.ndarray) -> float:
        spectrum = scipy.fft.rfft2(torus)
        total = scipy.fft.irfft2(spectrum * self.ones, s=self.shape)
        squares = scipy.fft.irfft2(scipy.fft.rfft2(torus ** 2) * self.ones, s=self.shape)
        variance = np.maximum(squares - total ** 2 / self.size, 0.0)
        best = 0.0
        for template, energy in zip(self.spectra, self.energy, strict=True):
            if energy < 1e-12:  # a flat reference correlates with nothing
                continue
            corr = scipy.fft.irfft2(spectrum * template, s=self.shape)
            denominator = np.sqrt(variance * energy)
            best = max(best, float(np.where(denominator > 1e-9, corr / np.maximum(denominator, 1e-9), 0.0).max()))
        return best


def _patches(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """LOOK_SAMPLES random patches (drawn with replacement: far cheaper than metrics' draw without)."""
    windows = np.lib.stride_tricks.sliding_window_view(arr, (metrics.PATCH, metrics.PATCH), axis=(0, 1))
    if windows.shape[0] < 1 or windows.shape[1] < 1:
        return None
    ys = rng.integers(0, windows.shape[0], LOOK_SAMPLES)
    xs = rng.integers(0, windows.shape[1], LOOK_SAMPLES)
    return windows[ys, xs].reshape(LOOK_SAMPLES, -1).astype(np.float32)


class _LookProfile:
    """The reference's sorted projected patches per scale, so each card projects only its own patches:
    the sliced Wasserstein distance of metrics.patch_distance, with the directions fixed once and equal
    sample counts on both sides (sorted samples are then the quantiles: nothing to interpolate)."""

    def __init__(self, reference: np.ndarray):
        rng = np.random.default_rng(0)
        self.scales = []
        for scale in metrics.SCALES:
            patches = _patches(metrics._downscale(reference, scale), rng)
            if patches is None:
                continue
            directions = rng.standard_normal((patches.shape[1], LOOK_PROJECTIONS)).astype(np.float32)
            directions /= np.linalg.norm(directions, axis=0, keepdims=True)
            self.scales.append((scale, directions, np.sort(patches @ directions, axis=0)))

    def distance(self, image: np.ndarray) -> float:
        rng = np.random.default_rng(1)
        total = 0.0
        for scale, directions, quantiles in self.scales:
            patches = _patches(metrics._downscale(image, scale), rng)
            if patches is not None:
                total += float(np.abs(np.sort(patches @ directions, axis=0) - quantiles).mean())
        return total


def card(image, reference, tile: str = "both", clip: float | None = None) -> dict:
    """The report card of one image against its reference (see the module's docstring)."""
    return Judge(reference, tile).card(image, clip)


def few_step_gate(card: dict) -> dict:
    """The card of a few-step (Fast) variant: `remake_full` is true exactly when its look verdict fails."""
    return card | {"remake_full": not card["same_look"]}


REMAKE_FULL_HINT = "its look does not match the source at Fast: make it again with Quality: Full"


def seam_card(image, tile: str = "both") -> dict:
    """The card of an image without a reference to compare with (a derived map): its seam only."""
    seam = metrics.seam_score(metrics.as_array(image))
    axes = AXES[tile]
    return {"seam": {axis: round(seam[axis], 3) for axis in axes},
            "tiles": all(seam[axis] <= SEAM_LIMIT for axis in axes)}


class MaterialJudge:
    """Cards for a variant and each of its maps: each given map is judged against its reference map,
    a derived map (nothing to compare with) by its seam alone."""

    def __init__(self, reference, reference_maps: dict, tile: str = "both"):
        self.tile = tile
        self.colour = Judge(reference, tile)
        self.maps = {name: Judge(m.pixels, tile) for name, m in reference_maps.items()}

    def card(self, image, maps: dict | None = None, clip: float | None = None) -> dict:
        out = self.colour.card(image, clip)
        if maps:
            out["maps"] = {name: (self.maps[name].card(m.pixels) if name in self.maps else seam_card(m.pixels, self.tile))
                           for name, m in sorted(maps.items())}
        return out
