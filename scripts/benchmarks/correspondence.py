"""`scripts/bench --correspondence`: the map correspondence on exact shuffles of 16-px blocks.

Per texture (scikit-image's grass, gravel, brick: smooth, semi-regular, regular) at 512², one variant
that is a random permutation of the reference's 16-px blocks, so every pixel at least 3 px inside a
block has an exact source: seconds (wall and this process's CPU) per variant, the share of those
pixels matched to their exact source, and the fidelity RMSE. Target: ≤ 2 s per 512² variant.
"""

from __future__ import annotations

import time

import numpy as np

from scripts.benchmarks.common import load_average, median, texture

TEXTURES = ("grass", "gravel", "brick")
SIZE, BLOCK, REACH = 512, 16, 3


def shuffled(size: int, block: int, seed: int) -> np.ndarray:
    n = size // block
    order = np.random.default_rng(seed).permutation(n * n)
    yy, xx = np.indices((size, size))
    source = order[(yy // block) * n + xx // block]
    return np.stack([(source // n) * block + yy % block, (source % n) * block + xx % block], axis=2)


def bench_correspondence(reps: int = 3, size: int = SIZE, log=print) -> dict:
    from backend.materials.correspondence import correspond
    from backend.materials.maps import gather

    offset = np.arange(size) % BLOCK
    inner = (offset >= REACH) & (offset < BLOCK - REACH)
    inside = inner[:, None] & inner[None, :]
    correspond(np.zeros((64, 64, 3), np.uint8) + 1, np.zeros((64, 64, 3), np.uint8) + 2)  # imports, warm
    rows, start_load = [], load_average()
    for name in TEXTURES:
        ref = np.asarray(texture(name, size).convert("RGB"))
        walls, cpus, shares, rmses = [], [], [], []
        for rep in range(reps):
            truth = shuffled(size, BLOCK, seed=rep)
            variant = gather(ref, truth)
            wall, cpu = time.perf_counter(), time.process_time()
            found = correspond(variant, ref)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            shares.append(float((found.coords == truth).all(axis=2)[inside].mean()))
            rmses.append(found.rmse)
            log(f"[bench] correspondence {name:<7} rep {rep + 1}/{reps}: {walls[-1]:.2f} s, exact {shares[-1]:.3f}")
        rows.append({"texture": name, "median_s": round(median(walls), 3), "median_cpu_s": round(median(cpus), 3),
                     "exact_inside_min": round(min(shares), 4), "rmse_median": round(median(rmses), 4)})
    return {"size": size, "reps": reps, "rows": rows, "load_average": {"start": start_load, "end": load_average()}}
