"""The downsample on export of a source larger than the backend reads (sizing.py says when and by
what factor), with numpy: a block mean, each output pixel the mean of a factor x factor block of
source pixels (the last width % factor columns and height % factor rows, fewer than `factor`, are
left out). Works in bands of output rows (rows summed first, whole rows at a time, then columns), so
besides the source only a band is held again and the passes stay in the cache. Plain numpy."""

from __future__ import annotations

import numpy as np

BAND_ROWS = 8  # output rows made at a time: a band of a 16384 px wide source stays in the cache


def block_mean(pixels, width: int, height: int, factor: int) -> tuple[np.ndarray, int, int]:
    """`pixels` (a flat float buffer of `width` x `height` RGBA, in any row order) reduced by the
    whole number `factor`: (the flat float32 buffer, in the same row order, its width, its height)."""
    if factor < 1 or factor > min(width, height):
        raise ValueError(f"a block mean needs a factor from 1 to the shorter side, not {factor}")
    source = np.asarray(pixels, dtype=np.float32).reshape(height, width, 4)
    new_width, new_height = width // factor, height // factor
    if factor == 1:
        return source.reshape(-1), width, height
    out = np.empty((new_height, new_width, 4), dtype=np.float32)
    scale = np.float32(1.0 / (factor * factor))
    for start in range(0, new_height, BAND_ROWS):
        stop = min(new_height, start + BAND_ROWS)
        # the band's rows summed in steps of `factor` (whole rows: contiguous adds), then its columns
        rows = source[start * factor:stop * factor].reshape(stop - start, factor, width, 4)
        summed = rows[:, 0, :new_width * factor].copy()
        for i in range(1, factor):
            summed += rows[:, i, :new_width * factor]
        cells = summed.reshape(stop - start, new_width, factor, 4)
        acc = out[start:stop]
        np.copyto(acc, cells[:, :, 0])
        for j in range(1, factor):
            acc += cells[:, :, j]
        acc *= scale
    return out.reshape(-1), new_width, new_height
