"""A starting structure guide from a texture: its edges as white lines on black.

numpy on a downscaled copy, so it runs in a few milliseconds and needs no backend: the guide is a
picture for the artist to paint the wanted layout over, not a measurement. A 3x3 Sobel gradient of
the luminance, wrapping around at the borders (the texture tiles, so its edges do too), thresholded
so that the strongest `keep` fraction of the pixels become lines.
"""

from __future__ import annotations

import numpy as np

LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709, on the linear values Blender stores


def luminance(rgba, width: int, height: int) -> list[float]:
    """Per-pixel luminance of flat RGBA floats (Blender's `image.pixels` order), as a flat list."""
    pixels = np.asarray(rgba, dtype=np.float64).reshape(width * height, 4)
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).tolist()


def sobel_magnitude(values, width: int, height: int) -> np.ndarray:
    """|gradient| of a width x height grid (row-major, flat), wrapping around on both axes; flat."""
    v = np.asarray(values, dtype=np.float64).reshape(height, width)

    def at(dy: int, dx: int) -> np.ndarray:  # the neighbour at (y + dy, x + dx), wrapped
        return np.roll(v, (-dy, -dx), axis=(0, 1))

    a, b, c = at(-1, -1), at(-1, 0), at(-1, 1)
    d, f = at(0, -1), at(0, 1)
    g, h, i = at(1, -1), at(1, 0), at(1, 1)
    gx = (c + 2 * f + i) - (a + 2 * d + g)
    gy = (g + 2 * h + i) - (a + 2 * b + c)
    return np.sqrt(gx * gx + gy * gy).ravel()


def edge_lines(values, width: int, height: int, keep: float = 0.12) -> list[float]:
    """1.0 where the gradient is among the strongest `keep` fraction (and not flat), else 0.0; a flat list."""
    magnitude = sobel_magnitude(values, width, height)
    rank = min(magnitude.size - 1, int(magnitude.size * (1.0 - keep)))
    threshold = np.partition(magnitude, rank)[rank]
    return ((magnitude >= threshold) & (magnitude > 1e-6)).astype(np.float64).tolist()
