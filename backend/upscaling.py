"""Seam-safe upscaling: a tileable image in, a tileable image `factor` x larger out, its maps with it.

1. **Wrap-aware Lanczos.** The image (and every map) is padded around the torus on its tiled axes by
   more than the Lanczos kernel's reach, resized, and the padding cut off again: each output pixel
   is the one a periodic resample gives, so the result tiles exactly like its input.
2. **Detail.**
   - *diffusion* (when its models are here): the enlarged image is encoded, noised to a low level
     (`upscale_strength`, default 0.3 of the steps) and denoised back at the larger size through the
     windowed path (backend/diffusion/refine.py), with the image itself as the IP-Adapter prompt and
     every convolution and window wrapping around: new detail at the new resolution, the structure
     kept. The maps follow the refined colour through the same wrap-around correspondence as a
     variant's (backend/materials/correspondence.py) into the Lanczos-enlarged maps;
   - *patch* (weight-free, everywhere): the image's own fine detail (its high-pass at its own pixel
     scale) is quilted over the larger canvas by the patch engine's quilter and added to the enlarged
     image, DETAIL x; every map gets its own high-pass through the same coordinates, so maps and
     colour stay in register exactly.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import replace

import numpy as np
from PIL import Image

from backend import engines
from backend.errors import InputError
from backend.images import load_reference
from backend.materials import variants as material
from backend.materials.maps import NORMAL, MaterialMap, resize
from backend.params import AXES
from backend.params import UPSCALE_FACTORS as FACTORS

log = logging.getLogger(__name__)

DETAIL = 0.5  # weight of the quilted high-pass (patch engine)
DETAIL_SIGMA = 1.0  # px at the input's scale: what counts as fine detail
_PAD = 4  # > the Lanczos kernel's reach of 3 source pixels


def _padding(tile: str) -> tuple[int, int]:
    wrap_x, wrap_y = AXES[tile]
    return (_PAD if wrap_y else 0), (_PAD if wrap_x else 0)


def wrap_resize(m: MaterialMap, factor: int, tile: str) -> MaterialMap:
    """The map `factor` x larger by Lanczos, periodic on the tiled axes (padded around, cut back)."""
    py, px = _padding(tile)
    padded = np.pad(m.pixels, ((py, py), (px, px), (0, 0)), mode="wrap")
    h, w = padded.shape[:2]
    big = resize(replace(m, pixels=padded), w * factor, h * factor)
    return replace(big, pixels=np.ascontiguousarray(big.pixels[py * factor:big.pixels.shape[0] - py * factor,
                                                              px * factor:big.pixels.shape[1] - px * factor]))


def _high_pass(values: np.ndarray, tile: str) -> np.ndarray:
    """values - a Gaussian blur of them (sigma DETAIL_SIGMA), wrapping on the tiled axes."""
    from scipy.ndimage import gaussian_filter

    wrap_x, wrap_y = AXES[tile]
    blurred = gaussian_filter(values, sigma=(DETAIL_SIGMA, 0, 0), mode="wrap" if wrap_y else "nearest")
    blurred = gaussian_filter(blurred, sigma=(0, DETAIL_SIGMA, 0), mode="wrap" if wrap_x else "nearest")
    return values - blurred


def _add_detail(big: MaterialMap, small: MaterialMap, coords: np.ndarray, tile: str) -> MaterialMap:
    """`big` plus DETAIL x the high-pass of `small` gathered through `coords`, in its own range."""
    values = small.pixels.astype(np.float32)
    out = big.pixels.astype(np.float32)
    if small.kind == NORMAL:
        values[..., :3], out[..., :3] = (values[..., :3] / small.top * 2 - 1), (out[..., :3] / big.top * 2 - 1)
    detail = _high_pass(values, tile)[coords[..., 0], coords[..., 1]]
    out += DETAIL * detail
    if small.kind == NORMAL:
        vectors = out[..., :3]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=2, keepdims=True), 1e-8)
        out[..., :3] = (vectors + 1) * 0.5 * big.top
    if big.is_float:
        return replace(big, pixels=np.clip(out, small.pixels.min(), small.pixels.max()).astype(np.float32))
    return replace(big, pixels=np.clip(np.rint(out), 0, big.top).astype(big.pixels.dtype))


def _detail_coords(image: np.ndarray, shape: tuple[int, int], tile: str, seed: int, cancel) -> np.ndarray:
    """Where each pixel of the larger canvas takes its detail from in the image (the patch quilter at
    the image's own scale)."""
    from backend.patch.engine import block_size
    from backend.patch.quilting import Quilter, layout

    stride, overlap = block_size(0.5, min(shape))
    spans = [layout(side, stride, overlap, True) for side in shape]
    max_block = max(axis.span(k) for axis in spans for k in range(len(axis.starts)))
    if max_block > min(image.shape[:2]):
        stride, overlap = block_size(0.5, min(image.shape[:2]))
        max_block = min(image.shape[:2])
    wrap_x, wrap_y = AXES[tile]
    quilter = Quilter(image.astype(np.float32) / 255.0, max_block)
    return quilter.quilt(shape, block=stride, overlap=overlap, seed=seed, wrap_y=wrap_y, wrap_x=wrap_x,
                         cancel=cancel)


def upscale(image, factor: int = 2, *, maps: dict | None = None, engine: str = "auto", seed: int | None = None,
            steps: int = 30, tile: str = "both", strength: float = 0.3, window: int = 512, base: str | None = None,
            ip_adapter: str | None = None, on_step=None, cancel=None) -> Image.Image:
    """`image` (path or PIL image, tileable) `factor` x larger, tileable the same way; `maps`
    ({name: path}) come back enlarged with it in `info["maps"]`, the parameters record in
    `info["parameters"]`. engine: "diffusion", "patch" (weight-free) or "auto" (diffusion when its
    models are here)."""
    from backend.params import GenerationParams

    if factor not in FACTORS:
        raise InputError(f"factor {factor!r}: upscale makes 2x or 4x", hint="pass --factor 2 or --factor 4")
    ref = load_reference(image)
    width, height = ref.size[0] * factor, ref.size[1] * factor
    params = GenerationParams.build({"upscale_strength": strength, "window": window} if engine != "patch" else {},
                                    engine=engine, seed=secrets.randbelow(2**31) if seed is None else seed,
                                    steps=steps, tile=tile, maps=dict(maps or {}), size=(min(width, 8192),
                                                                                          min(height, 8192)))
    if max(width, height) > 8192:
        raise InputError(f"{ref.size[0]}x{ref.size[1]} x{factor} is {width}x{height}: larger than 8192 px a side",
                         hint="upscale by 2, or start from a smaller image")
    params.check_size("diffusion" if engine == "diffusion" else "patch")
    given = material.load(params, ref.size)
    name, why = engines.resolve(engine, base, ip_adapter)
    log.info(why)
    colour = MaterialMap("colour", np.asarray(ref.rgb.convert("L"))[..., None] if ref.grayscale else np.asarray(ref.rgb))
    big = wrap_resize(colour, factor, tile)
    enlarged = {key: wrap_resize(m, factor, tile) for key, m in given.items()}
    record = {"upscale_factor": factor, "engine": name, "seed": params.seed, "tile": tile, **ref.record(),
              "size": [width, height]}
    if name == "diffusion":
        from backend.diffusion.refine import refine
        from backend.materials import correspondence

        enlarged_colour = Image.fromarray(big.pixels.squeeze(axis=2) if ref.grayscale else big.pixels).convert("RGB")
        out = refine(enlarged_colour, ref.rgb, params, base=base, ip_adapter=ip_adapter, on_step=on_step, cancel=cancel)
        found = correspondence.correspond(out, np.asarray(enlarged_colour), seed=params.seed)
        if ref.grayscale:
            out = out.convert("L")
        out.info["maps"] = {key: _gather(m, found.coords) for key, m in enlarged.items()}
        record |= {"steps": steps, "upscale_strength": strength, "window": window, **found.fidelity()}
    else:
        coords = _detail_coords(colour.pixels, (height, width), tile, params.seed, cancel)
        if on_step is not None:
            on_step(1, 1, None)
        pixels = _add_detail(big, colour, coords, tile).pixels
        out = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        out.info["maps"] = {key: _add_detail(enlarged[key], m, coords, tile) for key, m in given.items()}
        record |= {"upscale_detail": DETAIL}
    out.info["parameters"] = json.dumps(record, sort_keys=True)
    return out


def _gather(m: MaterialMap, coords: np.ndarray) -> MaterialMap:
    from backend.materials.maps import gather_map

    return gather_map(m, coords)
