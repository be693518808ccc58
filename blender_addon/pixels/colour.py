"""How a linear (HDR) texture goes through the backend, which works on 8-bit display values. Plain Python
(numpy).

The encoding is an exposure shift plus the sRGB curve: the reference is `srgb(x / scale)`, where
`scale` is the smallest power of two at or above the source's brightest value (1 when nothing is
above 1), so every value, those above 1 included, fits in [0, 1] without clipping. Blender writes it
(the scene's Standard view with exposure -log2(scale): its own colour management does the curve).
The backend's 8-bit variant is decoded back with `linear = srgb⁻¹(v) * scale` (a 256-entry table)
and saved as OpenEXR, tagged with the source's colour space. The backend's 8 bits are the
precision: about 0.4 % of `scale` near white, finer in the shadows (the sRGB curve's steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def srgb_to_linear(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def linear_to_srgb(x: float) -> float:
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055


def exposure_scale(brightest: float) -> float:
    """The power of two the source is divided by before encoding (1 for values up to 1)."""
    if not math.isfinite(brightest) or brightest <= 1.0:
        return 1.0
    return 2.0 ** math.ceil(math.log2(brightest))


def brightest(pixels: Sequence[float]) -> float:
    """The largest value (alpha, at most 1, cannot raise the scale above 1); NaN when one value is NaN."""
    return float(np.max(np.asarray(pixels, dtype=np.float32), initial=0.0))


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def decode(pixels, scale: float, channels: int = 4) -> np.ndarray:
    """RGBA floats of an 8-bit sRGB-encoded image -> linear float32 values times `scale` (alpha kept).

    Byte values (k/255, as Blender reads an 8-bit file) go through a 256-entry table; anything else
    is decoded value by value, clipped to 0-1."""
    values = np.asarray(pixels, dtype=np.float32)
    k = np.clip(np.rint(values * 255.0), 0, 255).astype(np.intp)
    # the float32 values a byte k may read as (k/255 rounded to float32 two ways, as Blender may)
    as_byte = (values == (k / 255.0).astype(np.float32)) | (values == (k * float(np.float32(1 / 255))).astype(np.float32))
    if as_byte.all():
        table = (_srgb_to_linear(np.arange(256) / 255.0) * scale).astype(np.float32)
        out = table[k]
    else:
        out = (_srgb_to_linear(np.clip(values.astype(np.float64), 0.0, 1.0)) * scale).astype(np.float32)
    if channels == 4:
        out[3::4] = values[3::4]
    return out
