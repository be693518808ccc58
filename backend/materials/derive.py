"""Maps derived from a colour image alone: height, normal, roughness (classical, weight-free).

Every filter wraps around (scipy.ndimage with mode="wrap", np.roll differences) and every
normalisation uses whole-image statistics, so each map is exactly roll-equivariant: rolling the
colour image rolls the derived maps, bit for bit, and a tileable colour image gives tileable maps.

- luminance: Rec. 709 weights on the stored (sRGB-encoded) values, 0..1;
- height: luminance band-passed, a Gaussian of HEIGHT_DETAIL px (noise) minus a Gaussian of
  `highpass` x the short side (lighting gradients), stretched so its 1st..99th percentiles span
  0..1 (clipped): bright = high;
- normal: from the height's central differences (periodic), OpenGL convention as Blender's Normal
  Map node expects: +X right (red), +Y up (green = up, toward the top of the image), +Z out of
  the surface; n = normalise(-strength * dh/dx, strength * dh/drow, 1) with h in 0..1 per pixel;
  encoded (n + 1) / 2;
- roughness: 0.35 + 0.45 * contrast + 0.2 * (1 - luminance), clipped to 0..1, where contrast is
  the local standard deviation of luminance (Gaussian window of ROUGHNESS_WINDOW px) divided by its
  95th percentile and clipped to 0..1: busy and dark areas rough, smooth bright ones glossier.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from backend.materials.maps import MaterialMap, from_unit
from backend.metrics import as_array
from backend.params import DERIVABLE_MAPS as DERIVABLE

HEIGHT_DETAIL = 1.0  # px: the Gaussian that removes pixel noise from the height
HIGHPASS = 1 / 16  # of the short side: the Gaussian whose blur (the lighting) the height loses
NORMAL_STRENGTH = 8.0
ROUGHNESS_WINDOW = 3.0  # px


def luminance(colour) -> np.ndarray:
    """(H, W) float64 luminance in 0..1 of an image (PIL or array, as metrics.as_array reads)."""
    arr = as_array(colour).astype(np.float64)
    if arr.shape[2] == 1:
        return arr[..., 0]
    return arr[..., :3] @ np.array([0.2126, 0.7152, 0.0722])


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(values, sigma, mode="wrap")


def height(colour, *, highpass: float = HIGHPASS) -> np.ndarray:
    """(H, W) height in 0..1 from luminance (see the module's rules)."""
    lum = luminance(colour)
    band = _blur(lum, HEIGHT_DETAIL) - _blur(lum, max(highpass * min(lum.shape), 2 * HEIGHT_DETAIL))
    lo, hi = np.percentile(band, [1, 99])
    if hi - lo < 1e-9:
        return np.full(lum.shape, 0.5)
    return np.clip((band - lo) / (hi - lo), 0.0, 1.0)


def normal_from_height(h: np.ndarray, *, strength: float = NORMAL_STRENGTH) -> np.ndarray:
    """(H, W, 3) unit normals (x right, y up, z out) from a periodic height field in 0..1."""
    d_dx = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) / 2
    d_drow = (np.roll(h, -1, axis=0) - np.roll(h, 1, axis=0)) / 2  # rows run down the image
    n = np.stack([-strength * d_dx, strength * d_drow, np.ones_like(h)], axis=2)
    return n / np.linalg.norm(n, axis=2, keepdims=True)


def encode_normals(n: np.ndarray) -> np.ndarray:
    """Unit vectors to 0..1 colours, as a normal map stores them."""
    return (n + 1.0) * 0.5


def decode_normals(values: np.ndarray, top: int) -> np.ndarray:
    """Stored normal-map samples (0..top) to vectors (not re-normalised)."""
    return np.asarray(values[..., :3], dtype=np.float64) / top * 2.0 - 1.0


def roughness(colour) -> np.ndarray:
    """(H, W) roughness in 0..1 from local contrast and luminance (see the module's rules)."""
    lum = luminance(colour)
    mean = _blur(lum, ROUGHNESS_WINDOW)
    std = np.sqrt(np.maximum(_blur(lum * lum, ROUGHNESS_WINDOW) - mean * mean, 0.0))
    scale = np.percentile(std, 95)
    contrast = np.clip(std / scale, 0.0, 1.0) if scale > 1e-9 else np.zeros_like(std)
    return np.clip(0.35 + 0.45 * contrast + 0.2 * (1.0 - lum), 0.0, 1.0)


def derive(colour, names=DERIVABLE, *, strength: float = NORMAL_STRENGTH, bits: int = 16, normal_bits: int = 8,
           normals=None) -> dict[str, MaterialMap]:
    """The requested derived maps, quantised to `bits`; `normals(colour) -> (H, W, 3)` unit
    vectors (e.g. marigold.predict_normals) replaces the classical normal when given."""
    unknown = [n for n in names if n not in DERIVABLE]
    if unknown:
        from backend.errors import InputError

        raise InputError(f"cannot derive {', '.join(map(repr, unknown))}",
                         hint=f"derivable maps: {', '.join(DERIVABLE)}")
    out: dict[str, MaterialMap] = {}
    h = height(colour) if {"height", "normal"} & set(names) else None
    if "height" in names:
        out["height"] = from_unit("height", h, bits=bits)
    if "normal" in names:
        vectors = normals(colour) if normals is not None else normal_from_height(h, strength=strength)
        out["normal"] = from_unit("normal", encode_normals(vectors), bits=normal_bits)
    if "roughness" in names:
        out["roughness"] = from_unit("roughness", roughness(colour), bits=bits)
    return out
