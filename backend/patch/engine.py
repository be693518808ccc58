"""The weight-free engine: toroidal image quilting of the reference (see backend/patch/quilting.py).

Needs no model and no GPU, so it is always available: the offline default and a fast preview.
What it does with the request (documented in docs/PATCH_ENGINE.md):

- the output is `size` = (width, height), any side from 64 to 8192; the reference is scaled to cover
  it (the scale the diffusion engine sees it at: a reference of the output's own size is used as
  it is), each side cropped to at most 2 x the output's longer side; alpha is quilted with the
  colour, exactly;
- `balance` sets the block size: 0 = 1/12 of the output's shorter side (the structure moves most),
  0.5 = 1/6 (default), 1 = 1/4 (the largest pieces of the reference kept);
- above WORK_SIDE px the blocks are chosen and cut at a working scale 1/f of the output (f the
  smallest integer that brings its longer side to WORK_SIDE), then every output pixel is copied
  from the full-size exemplar through the working coordinates: a working pixel is an f x f cell of
  whole exemplar pixels, so time and the quilter's arrays stay those of a WORK_SIDE output and only
  image-sized buffers grow with the output;
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
from backend.framing import extent
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


WORK_SIDE = 2048  # the quilter's longest side; larger outputs are quilted at 1/f scale and copied up


def block_size(balance: float, size: int) -> tuple[int, int]:
    """(stride, overlap) of the quilting blocks for a balance in [0, 1] and the output's shorter side."""
    blocks_per_side = max(2, round(1.0 / (1.0 / 12.0 + balance / 6.0)))  # 12 at 0, 6 at 0.5, 4 at 1
    stride = size / blocks_per_side
    return int(round(stride)), max(2, int(round(stride / 4)))


def work_factor(size) -> int:
    """f: the output is quilted at 1/f of its size (1 up to WORK_SIDE px)."""
    return max(1, -(-max(extent(size)) // WORK_SIDE))


def exemplar_from(reference: Reference, size) -> np.ndarray:
    """The reference as uint8 (h, w, c) at the output's scale: c = 1 (gray) or 3, plus 1 for alpha."""
    bands = [reference.rgb.convert("L")] if reference.grayscale else [reference.rgb]
    if reference.alpha is not None:
        bands.append(reference.alpha)
    w, h = reference.size
    (new_w, new_h), crop = _geometry(reference.size, size)
    if new_w / w > 4:
        log.warning("reference is %dx%d px: upscaled %.0fx to the output scale, it will look soft", w, h, new_w / w)
    arrays = []
    for band in bands:
        if (new_w, new_h) != (w, h):
            band = band.resize((new_w, new_h), Image.Resampling.LANCZOS)
        arr = np.asarray(band, dtype=np.uint8)
        arrays.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.ascontiguousarray(np.concatenate(arrays, axis=2)[crop])


def _geometry(reference_size: tuple[int, int], size):
    """((w, h) the reference is scaled to, the crop of that kept): it covers the output (w, h), each
    side at most 2 x the output's longer side (a very long strip adds little that is new and costs
    time: its centre is kept), cut to whole cells of the working scale."""
    (w, h), (out_w, out_h) = reference_size, extent(size)
    scale = max(out_w / w, out_h / h)
    new_w, new_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
    f, longest = work_factor(size), 2 * max(out_w, out_h)
    keep_h, keep_w = min(new_h, longest) // f * f, min(new_w, longest) // f * f
    top, left = (new_h - keep_h) // 2, (new_w - keep_w) // 2
    return (new_w, new_h), np.s_[top:top + keep_h, left:left + keep_w]


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
    coords: np.ndarray  # (height, width, 2) int (y, x) into `exemplar`
    exemplar: np.ndarray  # uint8 (h, w, c): the reference at the output's scale
    record: dict  # what goes into the image's parameters record


def prepare(reference: Reference, params: GenerationParams, max_block: int, pixels: np.ndarray | None = None,
            shape: tuple[int, int] | None = None):
    """(scaled reference, source map, guides, record): the quilter's exemplar is
    reference[source[..., 0], source[..., 1]], rectified to whole lattice periods when regular.
    `pixels`: the scaled reference to quilt and `shape` the (height, width) quilted (default:
    exemplar_from at the output's size, and that size)."""
    pixels = exemplar_from(reference, params.size) if pixels is None else pixels
    shape = (params.height, params.width) if shape is None else shape
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
        source, out_periods = _rectified(gray, periods, shape)
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


def _rectified(gray: np.ndarray, periods, shape: tuple[int, int]):
    """Source map (H, W, 2) of the rectified exemplar and its periods: straight lattice lines, a whole
    number of periods in the output's side (`shape`: height, width) on each periodic axis; an axis
    without a period is scaled like the other one, so the material keeps its aspect."""
    targets = tuple(None if p is None else side / max(1, round(side / p)) for p, side in zip(periods, shape, strict=True))
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
    f = work_factor(params.size)
    shape = (-(-params.height // f), -(-params.width // f))  # the quilted (height, width)
    stride, overlap = block_size(params.balance, min(shape))
    wrap_y, wrap_x = params.tile in ("both", "y"), params.tile in ("both", "x")
    max_block = max(axis.span(k) for axis in (layout(side, stride, overlap, wrap=True) for side in shape)
                    for k in range(len(axis.starts)))
    pixels = exemplar_from(reference, params.size)
    working, source, guides, guide_record = prepare(reference, params, max_block, _downsampled(pixels, f), shape)
    exemplar = working[source[..., 0], source[..., 1]]
    channels = 1 if reference.grayscale else 3
    courses = None
    if guides.regular and wrap_y and wrap_x:
        courses = bricks.find(_luminance(exemplar, channels), guides.periods)
    if courses is not None:
        guide_record = guide_record | {"patch_layout": "whole cells", "patch_cells": len(courses.cells)}
    quilter = Quilter(exemplar.astype(np.float32) / 255.0, max_block, guides)
    rows_per_variant = len(layout(shape[0], stride, overlap, wrap_y).starts)
    total = rows_per_variant * params.variants
    variants = []
    for i in range(params.variants):
        def on_row(row, rows, done=i * rows_per_variant):
            if on_step is not None:
                on_step(done + row, total, None)

        if courses is not None:
            coords = bricks.lay(courses, shape, params.seed + i)
            on_row(rows_per_variant, rows_per_variant)
        else:
            coords = quilter.quilt(shape, block=stride, overlap=overlap, seed=params.seed + i, wrap_y=wrap_y,
                                   wrap_x=wrap_x, on_row=on_row, cancel=cancel)
        coords = source[coords[..., 0], coords[..., 1]]  # into the scaled reference (working scale)
        if f == 1:
            luminance = _luminance(working[coords[..., 0], coords[..., 1]], channels)
            coords = np.roll(coords, np.negative(typical_origin(luminance, wrap_y, wrap_x)), axis=(0, 1))
        else:  # the file's edges at the output's own most typical row and column, not a working cell's edge
            first = gather_rows(pixels, upsampled(coords, (params.height, params.width), f))
            origin = _typical_origin_in_bands(first, channels, wrap_y, wrap_x)
            del first
            coords = upsampled(coords, (params.height, params.width), f, origin)
        out = gather_rows(pixels, coords)
        image = Image.fromarray(out[..., 0] if out.shape[2] == 1 else out)  # L, LA, RGB or RGBA
        record = {"steps": None, "patch_block": stride * f, "patch_overlap": overlap * f, "patch_work_scale": f,
                  "patch_exemplar_size": [int(pixels.shape[1]), int(pixels.shape[0])],
                  "patch_quilted_size": [int(exemplar.shape[1]), int(exemplar.shape[0])], **guide_record}
        variants.append(Variant(image=image, coords=coords, exemplar=pixels, record=record))
    return variants


def _downsampled(pixels: np.ndarray, f: int) -> np.ndarray:
    """The exemplar (sides multiples of f) at 1/f scale: the mean of each f x f cell."""
    if f == 1:
        return pixels
    h, w, c = pixels.shape
    out = np.empty((h // f, w // f, c), np.uint8)
    for y in range(0, h // f, 256):  # in bands: no float copy of the whole exemplar
        band = pixels[y * f:(y + 256) * f].reshape(-1, f, w // f, f, c).astype(np.float32).mean(axis=(1, 3))
        out[y:y + len(band)] = np.rint(band)
    return out


def _cells(side: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `side` pixels split into `cells` cells of at most ceil(side / cells) pixels: its cell
    and its offset from the cell's first pixel."""
    index = np.arange(side, dtype=np.int64)
    cell = index * cells // side
    return cell, index - (cell * side + cells - 1) // cells


def upsampled(coords: np.ndarray, shape: tuple[int, int], f: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W, 2) int32 coordinates into the full-scale exemplar from working ones: pixel (y, x) of
    working cell (i, j) copies exemplar pixel coords[i, j] * f + its offset in the cell (< f); with
    `origin` (dy, dx) the result is rolled by (-dy, -dx) on the torus."""
    if f == 1:
        return np.roll(coords, np.negative(origin), axis=(0, 1)).astype(np.int32, copy=False)
    (height, width), (rows, cols) = shape, coords.shape[:2]
    cell_y, off_y = (np.roll(a, -origin[0]) for a in _cells(height, rows))
    cell_x, off_x = (np.roll(a, -origin[1]) for a in _cells(width, cols))
    out = np.empty((height, width, 2), np.int32)
    for y in range(0, height, 512):  # in bands: no whole-size int64 temporaries
        cy, oy = cell_y[y:y + 512], off_y[y:y + 512]
        band = coords[cy][:, cell_x]
        out[y:y + len(cy), :, 0] = band[..., 0] * f + oy[:, None]
        out[y:y + len(cy), :, 1] = band[..., 1] * f + off_x[None, :]
    return out


def _typical_origin_in_bands(image: np.ndarray, channels: int, wrap_y: bool, wrap_x: bool) -> tuple[int, int]:
    """quilting.typical_origin of a large uint8 image, its steps summed in bands of rows."""
    height, width = image.shape[:2]
    rows, cols = np.zeros(height), np.zeros(width)
    previous = _luminance(image[-1:], channels)
    for y in range(0, height, 512):
        band = _luminance(image[y:y + 512], channels)
        rows[y:y + len(band)] = np.abs(band - np.concatenate([previous, band[:-1]])).mean(axis=1)
        cols += np.abs(band - np.roll(band, 1, axis=1)).sum(axis=0)
        previous = band[-1:]

    def pick(steps: np.ndarray) -> int:
        return int(np.argmin(np.abs(steps - np.median(steps))))

    return (pick(rows) if wrap_y else 0), (pick(cols) if wrap_x else 0)


def gather_rows(pixels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """pixels[coords[..., 0], coords[..., 1]], computed in bands of rows."""
    out = np.empty((*coords.shape[:2], pixels.shape[2]), pixels.dtype)
    for y in range(0, coords.shape[0], 512):
        band = coords[y:y + 512]
        out[y:y + len(band)] = pixels[band[..., 0], band[..., 1]]
    return out


def generate(reference: Reference, params: GenerationParams, *, base=None, ip_adapter=None, latents=None,
             on_step=None, cancel=None) -> list[Image.Image]:
    images = []
    for variant in synthesize(reference, params, on_step=on_step, cancel=cancel):
        variant.image.info["engine_parameters"] = variant.record
        variant.image.info["source_coords"] = variant.coords  # api.generate gathers the maps through it
        images.append(variant.image)
    return images
