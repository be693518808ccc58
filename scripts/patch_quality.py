"""Measure the patch engine on the real textures of docs/PATCH_ENGINE.md: metrics per seed and timing.

    .venv/bin/python scripts/patch_quality.py [--size 512] [--seeds 0-15] [--textures brick,grass,...]
        [--option structure=stochastic] [--json out.json]

Prints one line per variant (seconds, seam, appearance, copy, structure, proportion; for brick and
the procedural walls wall1, wall2, … also bricks_bad, metrics.brick_integrity) and, per texture, the
median and the worst value of each metric.
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

from backend import generate_variants  # noqa: E402
from backend.metrics import brick_integrity, texture_metrics  # noqa: E402

TEXTURES = ("brick", "grass", "gravel", "immunohistochemistry", "gravel_colour")
WALLS = ("brick", "wall1", "wall2", "wall3")  # brick integrity is reported for these (scripts/walls.py: wallN)


def texture(name: str, size: int) -> Image.Image:
    """A size² reference: the scikit-image picture at its own scale (centre crop), resized if smaller."""
    import skimage.data

    if name.startswith("wall"):  # a procedural wall (scripts/walls.py), seed N
        from scripts.walls import brick_wall

        return Image.fromarray(brick_wall(size, int(name[4:])))
    if name == "gravel_colour":  # the stationary colour texture: gravel tinted brown (as tests/conftest.py)
        gray = np.asarray(texture("gravel", size), np.float32) / 255.0
        return Image.fromarray((np.stack([gray * 0.9 + 0.1, gray * 0.7, gray * 0.5], axis=-1) * 255).astype(np.uint8))
    arr = getattr(skimage.data, name)()
    h, w = arr.shape[:2]
    side = min(h, w, 512)
    top, left = (h - side) // 2, (w - side) // 2
    image = Image.fromarray(arr[top:top + side, left:left + side])
    return image if side == size else image.resize((size, size), Image.Resampling.LANCZOS)


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", default="0-15", help="a range, e.g. 0-15")
    parser.add_argument("--textures", default=",".join(TEXTURES))
    parser.add_argument("--balance", type=float, default=0.5)
    parser.add_argument("--option", action="append", default=[], help="engine extra, NAME=VALUE")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args()
    extra = dict(option.split("=", 1) for option in args.option)
    report = {}
    for name in args.textures.split(","):
        reference = texture(name, args.size)
        rows = []
        for seed in seeds(args.seeds):
            start = time.perf_counter()
            (image,) = generate_variants(reference, engine="patch", seed=seed, size=args.size,
                                         balance=args.balance, **extra)
            seconds = time.perf_counter() - start
            m = texture_metrics(image, reference) | {"seconds": seconds}
            if name in WALLS:
                m["bricks_bad"] = brick_integrity(image, reference)["bad"]
            rows.append(m)
            print(f"{name:22s} seed {seed:3d} " + " ".join(f"{k} {v:.2f}" for k, v in m.items()), flush=True)
        summary = {k: (float(np.median([r[k] for r in rows])), float(max(r[k] for r in rows))) for k in rows[0]}
        print(f"{name:22s} median / worst: " + ", ".join(f"{k} {a:.2f} / {b:.2f}" for k, (a, b) in summary.items()))
        report[name] = {"variants": rows, "median_worst": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
