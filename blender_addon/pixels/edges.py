"""A starting structure guide from a texture: its edges as white lines on black.

Plain Python (no bpy, no numpy: the add-on imports bpy and the standard library only), on a
downscaled copy, so it runs in well under a second and needs no backend: the guide is a picture for
the artist to paint the wanted layout over, not a measurement. A 3x3 Sobel gradient of the
luminance, wrapping around at the borders (the texture tiles, so its edges do too), thresholded so
that the strongest `keep` fraction of the pixels become lines.
"""

from __future__ import annotations

LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709, on the linear values Blender stores


def luminance(rgba, width: int, height: int) -> list[float]:
    """Per-pixel luminance of flat RGBA floats (Blender's `image.pixels` order)."""
    r, g, b = rgba[0::4], rgba[1::4], rgba[2::4]
    return [LUMA[0] * x + LUMA[1] * y + LUMA[2] * z for x, y, z in zip(r, g, b, strict=True)]


def sobel_magnitude(values: list[float], width: int, height: int) -> list[float]:
    """|gradient| of a width x height grid (row-major), wrapping around on both axes."""
    out = [0.0] * (width * height)
    for y in range(height):
        up, row, down = ((y - 1) % height) * width, y * width, ((y + 1) % height) * width
        for x in range(width):
            left, right = (x - 1) % width, (x + 1) % width
            a, b, c = values[up + left], values[up + x], values[up + right]
            d, f = values[row + left], values[row + right]
            g, h, i = values[down + left], values[down + x], values[down + right]
            gx = (c + 2 * f + i) - (a + 2 * d + g)
            gy = (g + 2 * h + i) - (a + 2 * b + c)
            out[row + x] = (gx * gx + gy * gy) ** 0.5
    return out


def edge_lines(values: list[float], width: int, height: int, keep: float = 0.12) -> list[float]:
    """1.0 where the gradient is among the strongest `keep` fraction (and not flat), else 0.0."""
    magnitude = sobel_magnitude(values, width, height)
    ranked = sorted(magnitude)
    threshold = ranked[min(len(ranked) - 1, int(len(ranked) * (1.0 - keep)))]
    return [1.0 if m >= threshold and m > 1e-6 else 0.0 for m in magnitude]
