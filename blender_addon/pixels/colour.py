"""How a linear (HDR) texture goes through the backend, which works on 8-bit display values. Plain Python.

The encoding is an exposure shift plus the sRGB curve: the reference is `srgb(x / scale)`, where
`scale` is the smallest power of two at or above the source's brightest value (1 when nothing is
above 1), so every value, those above 1 included, fits in [0, 1] without clipping. Blender writes it
(the scene's Standard view with exposure -log2(scale): its own colour management does the curve).
The backend's 8-bit variant is decoded back with `linear = srgb⁻¹(v) * scale` (a 256-entry table)
and saved as OpenEXR, tagged with the source's colour space. The backend's 8 bits are the
precision: about 0.4 % of `scale` near white, finer in the shadows (the sRGB curve's steps).
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence


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
    """The largest value (alpha, at most 1, cannot raise the scale above 1; a C-speed max on big images)."""
    return max(pixels, default=0.0)


def _byte_keys(k: int) -> tuple[float, ...]:
    """The float values a byte k may read as (k/255 rounded to float32 two ways, as Blender may)."""
    return tuple(array.array("f", [k / 255, k * array.array("f", [1 / 255])[0]]))


def decode_table(scale: float) -> dict[float, float]:
    """{8-bit value as Blender reads it (k/255): linear value} for the backend's variant."""
    table = {}
    for k in range(256):
        linear = srgb_to_linear(k / 255) * scale
        for key in _byte_keys(k):
            table[key] = linear
    return table


def decode(pixels: array.array, scale: float, channels: int = 4) -> array.array:
    """RGBA floats of an 8-bit sRGB-encoded image -> linear floats times `scale` (alpha kept)."""
    table = decode_table(scale)
    try:
        out = array.array("f", map(table.__getitem__, pixels))
    except KeyError:  # not exact byte values: decode each one
        out = array.array("f", (srgb_to_linear(min(1.0, max(0.0, v))) * scale for v in pixels))
    if channels == 4:
        out[3::4] = pixels[3::4]
    return out
