"""Timings and fidelity of the material-map machinery (numbers quoted in docs/guide/materials.md, "Whole materials").

Usage: .venv/bin/python scripts/bench_materials.py [--size 512] [--repeat 3]

On scikit-image's brick (tinted RGB) at --size:
- correspondence: seconds per variant, on a shifted copy (must be exact) and on a patch-engine
  variant (the quilter's own source coordinates are the known answer): RMSE / MAE of the gathered
  base colour, and the fraction of pixels whose coordinates equal the quilter's;
- gather: seconds per extra map (8-bit RGB and 16-bit gray);
- derive: seconds for height, normal and roughness together.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.materials import derive  # noqa: E402
from backend.materials.correspondence import correspond  # noqa: E402
from backend.materials.maps import gather  # noqa: E402
from backend.patch.engine import block_size  # noqa: E402
from backend.patch.quilting import Quilter, layout  # noqa: E402


def brick(size: int) -> np.ndarray:
    import skimage.data

    image = Image.fromarray(skimage.data.brick())
    side = min(image.size)
    gray = np.asarray(image.crop((0, 0, side, side)).resize((size, size), Image.Resampling.LANCZOS), np.float64)
    return np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size, ref = args.size, brick(args.size)
    out: dict[str, float] = {"size": size}

    shifted = np.roll(ref, (size // 3, -size // 5), axis=(0, 1))
    out["correspond_shifted_s"], found = best_of(args.repeat, lambda: correspond(shifted, ref))
    out["shifted_rmse"] = found.rmse

    stride, overlap = block_size(0.5, size)
    span = max(layout(size, stride, overlap, True).span(k) for k in range(len(layout(size, stride, overlap, True).starts)))
    coords = Quilter(ref.astype(np.float32) / 255, span).quilt(size, block=stride, overlap=overlap, seed=1)
    variant = gather(ref, coords)
    out["correspond_patch_variant_s"], found = best_of(args.repeat, lambda: correspond(variant, ref))
    out["patch_variant_rmse"], out["patch_variant_mae"] = found.rmse, found.mae
    out["patch_variant_exact_coords"] = float((found.coords == coords).all(axis=2).mean())

    gray16 = (ref[..., :1].astype(np.uint16) * 257)
    out["gather_rgb8_s"], _ = best_of(args.repeat, lambda: gather(ref, coords))
    out["gather_gray16_s"], _ = best_of(args.repeat, lambda: gather(gray16, coords))
    out["derive_all_s"], _ = best_of(args.repeat, lambda: derive.derive(variant))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
