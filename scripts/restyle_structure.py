"""How much of the input's structure a restyle keeps: edge-map agreement between input and output.

Usage: .venv/bin/python scripts/restyle_structure.py MODELS_DIR [--size 128] [--steps 10] [--seeds 0 1 2]
       [--strength 0.5] [--start inverted|noise]

MODELS_DIR is a `make-test-models` folder. On scikit-image's brick texture, one restyle per seed;
the agreement is the F1 score of the two Canny edge maps (backend.sketches.edge_map), an edge pixel
counting as matched when the other map has an edge within 1 px. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend import restyle  # noqa: E402
from backend.sketches import edge_map  # noqa: E402
from scripts.benchmarks.common import load_average, texture  # noqa: E402


def _grown(edges: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce([np.roll(edges, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def edge_agreement(a, b) -> float:
    """F1 of the edge maps of a and b, matches within 1 px (wrapping around: textures tile)."""
    ea, eb = (np.asarray(edge_map(im)) > 0 for im in (a, b))
    near_a, near_b = (_grown(e) for e in (ea, eb))
    precision = (eb & near_a).sum() / max(1, eb.sum())
    recall = (ea & near_b).sum() / max(1, ea.sum())
    return float(2 * precision * recall / max(1e-12, precision + recall))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--start", default=None, help="restyle_start (default: the engine's)")
    args = p.parse_args(argv)
    ref = texture("brick", args.size).convert("RGB")
    common = dict(base=str(args.models / "sd15"), ip_adapter=str(args.models / "ip-adapter"), size=args.size,
                  steps=args.steps, strength=args.strength)
    if args.start:
        common["restyle_start"] = args.start
    scores = [edge_agreement(ref, restyle(ref, "mossy bricks", seed=seed, **common)[0]) for seed in args.seeds]
    print(json.dumps({"edge_f1": round(statistics.mean(scores), 4), "per_seed": [round(s, 4) for s in scores],
                      "size": args.size, "steps": args.steps, "strength": args.strength, "start": args.start,
                      "load": load_average()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
