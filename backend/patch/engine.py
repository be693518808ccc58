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

import numpy as np
from PIL import Image

from backend.images import Reference
from backend.params import GenerationParams
from backend.patch.quilting import Quilter, layout, typical_origin

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
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if scale > 4:
        log.warning("reference is %dx%d px: upscaled %.0fx to the output scale, it will look soft", w, h, scale)
    arrays = []
    for band in bands:
        if (new_w, new_h) != (w, h):
            band = band.resize((new_w, new_h), Image.Resampling.LANCZOS)
        arr = np.asarray(band, dtype=np.uint8)
        arrays.append(arr[..., None] if arr.ndim == 2 else arr)
    pixels = np.concatenate(arrays, axis=2)
    # A very long strip adds little that is new and costs time: keep its central 2 x size.
    top = max(0, (new_h - 2 * size) // 2)
    left = max(0, (new_w - 2 * size) // 2)
    return np.ascontiguousarray(pixels[top:top + 2 * size, left:left + 2 * size])


def generate(reference: Reference, params: GenerationParams, *, base=None, ip_adapter=None, latents=None,
             on_step=None, cancel=None) -> list[Image.Image]:
    size = params.size
    pixels = exemplar_from(reference, size)
    stride, overlap = block_size(params.balance, size)
    wrap_y, wrap_x = params.tile in ("both", "y"), params.tile in ("both", "x")
    full = layout(size, stride, overlap, wrap=True)
    quilter = Quilter(pixels.astype(np.float32) / 255.0, max(full.span(k) for k in range(len(full.starts))))
    rows_per_variant = len(layout(size, stride, overlap, wrap_y).starts)
    total = rows_per_variant * params.variants
    images = []
    for i in range(params.variants):
        def on_row(row, rows, done=i * rows_per_variant):
            if on_step is not None:
                on_step(done + row, total, None)

        coords = quilter.quilt(size, block=stride, overlap=overlap, seed=params.seed + i, wrap_y=wrap_y,
                               wrap_x=wrap_x, on_row=on_row, cancel=cancel)
        out = pixels[coords[..., 0], coords[..., 1]]
        channels = 1 if reference.grayscale else 3
        luminance = out[..., :channels].astype(np.float32).mean(axis=2)
        dy, dx = typical_origin(luminance, wrap_y, wrap_x)
        out = np.roll(out, (-dy, -dx), axis=(0, 1))
        image = Image.fromarray(out[..., 0] if out.shape[2] == 1 else out)  # L, LA, RGB or RGBA
        image.info["engine_parameters"] = {
            "steps": None, "patch_block": stride, "patch_overlap": overlap,
            "patch_exemplar_size": [int(pixels.shape[1]), int(pixels.shape[0])],
        }
        images.append(image)
    return images
