"""The weight-free engine: toroidal image quilting of the reference (see backend/patch/quilting.py).

Needs no model and no GPU, so it is always available: the offline default and a fast preview.
What it does with the request (documented in docs/PATCH_ENGINE.md):

- the reference is scaled so that its short side is `size` (the scale the diffusion engine sees
  it at), its long side cropped to at most 2 x `size`; alpha is quilted with the colour, exactly;
- `balance` sets the block size: 0 = 1/12 of the output (the structure moves most), 0.5 = 1/6
  (default), 1 = 1/4 (the largest pieces of the reference kept);
- `steps`, `appearance`, `prompt`, `ip_scale` and `guidance_scale` mean nothing here and are
  ignored (the parameters record of each image says `steps: null`);
- variant i uses seed + i; the same seed gives the same image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.images import Reference
from backend.materials.maps import MaterialMap, fit
from backend.params import GenerationParams
from backend.patch import bricks, lattice
from backend.patch.proportions import Proportions
from backend.patch.quilting import Guides, Quilter, layout, typical_origin

NAME = "patch"
log = logging.getLogger(__name__)


def available(base=None, ip_adapter=None) -> tuple[bool, str]:
    return True, "weight-free: needs no models"


def block_size(balance: float, size: int) -> tuple[int, int]:
    """(stride, overlap) of the quilting blocks for a balance in [0, 1] and an output size."""
    blocks_per_side = max(2, round(1.0 / (1.0 / 12.0 + balance / 6.0)))  # 12 at 0, 6 at 0.5, 4 at 1
    stride = size / blocks_per_side
    return int(round(stride)), max(2, int(round(stride / 4)))


def exemplar_from(reference: Reference, size: int) -> np.ndarray:
    """The reference as uint8 (h, w, c) at the output's scale: c = 1 (gray) or 3, plus 1 for alpha."""
    bands = [reference.rgb.convert("L")] if reference.grayscale else [reference.rgb]
    if reference.alpha is not None:
        bands.append(reference.alpha)
    w, h = reference.size
    (new_w, new_h), crop = _geometry(reference.size, size)
    if size / min(w, h) > 4:
        log.warning("reference is %dx%d px: upscaled %.0fx to the output scale, it will look soft", w, h,
                    size / min(w, h))
    arrays = []
    for band in bands:
        if (new_w, new_h) != (w, h):
            band = band.resize((new_w, new_h), Image.Resampling.LANCZOS)
        arr = np.asarray(band, dtype=np.uint8)
        arrays.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.ascontiguousarray(np.concatenate(arrays, axis=2)[crop])


def _geometry(reference_size: tuple[int, int], size: int):
    """((w, h) the reference is scaled to, the crop of that kept): short side `size`, long side at
    most 2 x `size` (a very long strip adds little that is new and costs time: its centre is kept)."""
    w, h = reference_size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    top, left = max(0, (new_h - 2 * size) // 2), max(0, (new_w - 2 * size) // 2)
    return (new_w, new_h), np.s_[top:top + 2 * size, left:left + 2 * size]


def scale_map(m: MaterialMap, reference_size: tuple[int, int], params: GenerationParams) -> MaterialMap:
    """A map of the reference's size put through exemplar_from's scale and crop (the variants'
    source coordinates index the result)."""
    (new_w, new_h), crop = _geometry(reference_size, params.size)
    fitted = fit(m, new_w, new_h)
    return replace(fitted, pixels=np.ascontiguousarray(fitted.pixels[crop]))


def scaled_reference(reference: Reference, params: GenerationParams) -> np.ndarray:
    """The reference as the variants' source coordinates index it."""
    return exemplar_from(reference, params.size)


EXPECT = {
    "regular": "near-regular texture (a lattice of bricks, tiles or planks): rows and joints are kept "
               "whole and continuous; the output holds a whole number of periods, so they may be rescaled "
               "slightly",
    "stochastic": "irregular texture: pieces of the reference in new arrangements; for bricks, tiles or "
                  "planks use the diffusion engine or structure='regular'",
}


@dataclass
class Variant:
    """One output and where every pixel came from: image == exemplar[coords[..., 0], coords[..., 1]]."""

    image: Image.Image
    coords: np.ndarray  # (size, size, 2) int (y, x) into `exemplar`
    exemplar: np.ndarray  # uint8 (h, w, c): the reference at the output's scale
    record: dict  # what goes into the image's parameters record


def prepare(reference: Reference, params: GenerationParams, max_block: int):
    """(scaled reference, source map, guides, record): the quilter's exemplar is
    reference[source[..., 0], source[..., 1]], rectified to whole lattice periods when regular."""
    size = params.size
    pixels = exemplar_from(reference, size)
    channels = 1 if reference.grayscale else 3
    structure = params.patch.structure
    gray = _luminance(pixels, channels)
    found = lattice.STOCHASTIC if structure == "stochastic" else lattice.detect(gray)
    if structure == "regular" and not found.regular:
        raise InputError("structure='regular' was asked for, but the reference shows no lattice",
                         hint="no repeating period was found in it: use structure='auto' or 'stochastic'")
    wrap = (params.tile in ("both", "y"), params.tile in ("both", "x"))
    periods = (found.period_y if wrap[0] else None, found.period_x if wrap[1] else None)
    record: dict = {}
    h, w = gray.shape
    source = np.stack(np.mgrid[:h, :w].astype(np.int32), axis=2)
    guides = Guides()
    if any(p is not None for p in periods):
        source, out_periods = _rectified(gray, periods, size)
        if min(source.shape[:2]) < max_block:  # too little of the lattice is straightened out: irregular path
            return _prepared(pixels, channels, np.stack(np.mgrid[:h, :w].astype(np.int32), axis=2), Guides(), record)
        gray = gray[source[..., 0], source[..., 1]]
        phases = tuple(None if p is None else lattice.phase(gray, p, axis) for axis, p in enumerate(out_periods))
        guides = Guides(phases=phases, periods=out_periods)
        record |= {"patch_period": [None if p is None else round(p, 2) for p in out_periods],
                   "patch_rescale": [None if p is None else round(q / p, 4) for p, q in zip(periods, out_periods,
                                                                                           strict=True)]}
    return _prepared(pixels, channels, source, guides, record)


def _prepared(pixels, channels: int, source: np.ndarray, guides: Guides, record: dict):
    record = record | {"patch_structure": "regular" if guides.regular else "stochastic"}
    record["patch_expect"] = EXPECT[record["patch_structure"]]
    exemplar = pixels[source[..., 0], source[..., 1]]
    proportions = Proportions(exemplar[..., :channels].astype(np.float32) / 255.0)
    return pixels, source, Guides(guides.phases, guides.periods, proportions), record


def _luminance(pixels: np.ndarray, channels: int) -> np.ndarray:
    return pixels[..., :channels].astype(np.float32).mean(axis=2)


def _rectified(gray: np.ndarray, periods, size: int):
    """Source map (H, W, 2) of the rectified exemplar and its periods: straight lattice lines, a whole
    number of periods in `size` on each periodic axis; an axis without a period is scaled like the
    other one, so the material keeps its aspect."""
    targets = tuple(None if p is None else size / max(1, round(size / p)) for p in periods)
    scale = next(t / p for t, p in zip(targets, periods, strict=True) if p is not None)
    h, w = gray.shape
    xmap = _axis_map(gray, periods[1], targets[1], scale, axis=1)  # (h, W)
    gray = gray[np.arange(h)[:, None], xmap]
    ymap = _axis_map(gray, periods[0], targets[0], scale, axis=0)  # (H, W)
    xsource = xmap[ymap, np.arange(xmap.shape[1])[None, :]]
    return np.stack([ymap, xsource], axis=2), targets


def _axis_map(gray: np.ndarray, period, target, scale: float, axis: int) -> np.ndarray:
    """Source index along one axis: the lattice straightened when its lines run unbroken (they may
    lean or bend in perspective), else the axis scaled by target / period (or `scale` without a period)."""
    if period is not None and lattice.continuous(gray, period, axis):
        return lattice.rectify(gray, period, target, axis)
    factor = scale if period is None else target / period
    line = _resampled(gray.shape[axis], factor)
    if axis == 1:
        return np.broadcast_to(line[None, :], (gray.shape[0], len(line)))
    return np.broadcast_to(line[:, None], (len(line), gray.shape[1]))


def _resampled(n: int, scale: float) -> np.ndarray:
    """Nearest source index of each of the int(n * scale) pixels of a line scaled by `scale`."""
    return np.minimum(((np.arange(int(n * scale)) + 0.5) / scale).astype(np.int64), n - 1)


def synthesize(reference: Reference, params: GenerationParams, *, on_step=None, cancel=None) -> list[Variant]:
    """The variants, each with its source coordinate map into the (scaled) exemplar."""
    size = params.size
    stride, overlap = block_size(params.balance, size)
    wrap_y, wrap_x = params.tile in ("both", "y"), params.tile in ("both", "x")
    full = layout(size, stride, overlap, wrap=True)
    max_block = max(full.span(k) for k in range(len(full.starts)))
    pixels, source, guides, guide_record = prepare(reference, params, max_block)
    exemplar = pixels[source[..., 0], source[..., 1]]
    channels = 1 if reference.grayscale else 3
    courses = None
    if guides.regular and wrap_y and wrap_x:
        courses = bricks.find(_luminance(exemplar, channels), guides.periods)
    if courses is not None:
        guide_record = guide_record | {"patch_layout": "whole cells", "patch_cells": len(courses.cells)}
    quilter = Quilter(exemplar.astype(np.float32) / 255.0, max_block, guides)
    rows_per_variant = len(layout(size, stride, overlap, wrap_y).starts)
    total = rows_per_variant * params.variants
    variants = []
    for i in range(params.variants):
        def on_row(row, rows, done=i * rows_per_variant):
            if on_step is not None:
                on_step(done + row, total, None)

        if courses is not None:
            coords = bricks.lay(courses, size, params.seed + i)
            on_row(rows_per_variant, rows_per_variant)
        else:
            coords = quilter.quilt(size, block=stride, overlap=overlap, seed=params.seed + i, wrap_y=wrap_y,
                                   wrap_x=wrap_x, on_row=on_row, cancel=cancel)
        luminance = _luminance(exemplar[coords[..., 0], coords[..., 1]], channels)
        dy, dx = typical_origin(luminance, wrap_y, wrap_x)
        coords = np.roll(coords, (-dy, -dx), axis=(0, 1))
        coords = source[coords[..., 0], coords[..., 1]]  # into the scaled reference
        out = pixels[coords[..., 0], coords[..., 1]]
        image = Image.fromarray(out[..., 0] if out.shape[2] == 1 else out)  # L, LA, RGB or RGBA
        record = {"steps": None, "patch_block": stride, "patch_overlap": overlap,
                  "patch_exemplar_size": [int(pixels.shape[1]), int(pixels.shape[0])],
                  "patch_quilted_size": [int(exemplar.shape[1]), int(exemplar.shape[0])], **guide_record}
        variants.append(Variant(image=image, coords=coords, exemplar=pixels, record=record))
    return variants


def generate(reference: Reference, params: GenerationParams, *, base=None, ip_adapter=None, latents=None,
             on_step=None, cancel=None) -> list[Image.Image]:
    images = []
    for variant in synthesize(reference, params, on_step=on_step, cancel=cancel):
        variant.image.info["engine_parameters"] = variant.record
        variant.image.info["source_coords"] = variant.coords  # api.generate gathers the maps through it
        images.append(variant.image)
    return images
