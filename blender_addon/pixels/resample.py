"""The downsample on export of a source larger than the backend reads (sizing.py says when and by
what factor), with numpy: a block mean, each output pixel the mean of a factor x factor block of
source pixels (the last width % factor columns and height % factor rows, fewer than `factor`, are
left out). Works in bands of output rows (rows summed first, whole rows at a time, then columns), so
besides the source only a band is held again and the passes stay in the cache. Plain numpy."""

from __future__ import annotations

import numpy as np

BAND_ROWS = 16  # output rows made at a time: a band of a 16384 px wide source stays in the cache


def block_mean(pixels, width: int, height: int, factor: int, to_bytes: bool = False,
               channels: int = 4) -> tuple[np.ndarray, int, int]:
    """`pixels` (a flat float buffer of `width` x `height` RGBA, in any row order) reduced by the
    whole number `factor`: (the flat float32 buffer, in the same row order, its width, its height).
    `to_bytes`: the means as 8-bit values instead (0-1 rounded to 0-255), made band by band, so an
    8-bit source never holds the reduced image as floats; with `channels` 3, RGB only (the bytes of
    an opaque image)."""
    if factor < 1 or factor > min(width, height):
        raise ValueError(f"a block mean needs a factor from 1 to the shorter side, not {factor}")
    source = np.asarray(pixels, dtype=np.float32).reshape(height, width, 4)
    new_width, new_height = width // factor, height // factor
    if not to_bytes:
        channels = 4
    if factor == 1 and not to_bytes:
        return source.reshape(-1), width, height
    out = np.empty((new_height, new_width, channels), dtype=np.uint8 if to_bytes else np.float32)
    scale = 255.0 if to_bytes else 1.0
    # The columns of a block, side by side in a row of factor x 4 samples, meet in one matrix product
    # (numpy's strided adds over 4-sample pixels are several times slower).
    weights = np.zeros((factor * 4, 4), dtype=np.float32)
    for j in range(factor):
        weights[j * 4:(j + 1) * 4] = np.eye(4, dtype=np.float32) * np.float32(scale / (factor * factor))
    for start in range(0, new_height, BAND_ROWS):
        stop = min(new_height, start + BAND_ROWS)
        rows = source[start * factor:stop * factor].reshape(stop - start, factor, width, 4)
        summed = rows[:, 0, :new_width * factor].copy()  # the band's rows summed, whole rows at a time
        for i in range(1, factor):
            summed += rows[:, i, :new_width * factor]
        if not to_bytes:
            np.matmul(summed.reshape(-1, factor * 4), weights, out=out[start:stop].reshape(-1, 4))
            continue
        means = summed.reshape(-1, factor * 4) @ weights[:, :channels] + np.float32(0.5)
        np.clip(means, 0.0, 255.0, out=means)
        out[start:stop] = means.reshape(stop - start, new_width, channels)  # the cast truncates: rounded by the 0.5
    return out.reshape(-1), new_width, new_height
