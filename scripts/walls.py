"""Procedural brick walls with a known answer: courses of bricks of random lengths and colours,
mortar joints, noise (the whole-brick tests and scripts/patch_quality.py)."""

from __future__ import annotations

import numpy as np


def brick_wall(size: int = 256, seed: int = 0, *, course: int = 24, lengths=(28, 80), mortar: int = 4,
               noise: float = 0.03, colour: bool = True) -> np.ndarray:
    """(size, size, 3) uint8 (or (size, size) when not `colour`): horizontal courses `course` px tall
    (mortar included), bricks of uniform random lengths in `lengths` (mortar included), random
    reddish colours with a little shading along each brick, light grey mortar, Gaussian noise."""
    rng = np.random.default_rng(seed)
    wall = np.empty((size, size, 3), np.float64)
    wall[:] = (0.78, 0.76, 0.72)
    for top in range(0, size, course):
        x = -int(rng.integers(0, lengths[1]))
        while x < size:
            length = int(rng.integers(lengths[0], lengths[1] + 1))
            base = np.array([rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.25)])
            lo, hi = max(x, 0), min(x + length - mortar, size)
            if hi > lo:
                shade = 1 + 0.04 * np.sin(np.linspace(0, np.pi, hi - lo))[None, :, None]
                wall[top:min(top + course - mortar, size), lo:hi] = base * shade
            x += length
    wall += rng.normal(0, noise, wall.shape)
    out = (np.clip(wall, 0, 1) * 255).round().astype(np.uint8)
    return out if colour else out.mean(axis=2).round().astype(np.uint8)
