"""The `upscale` command: a tileable image 2x or 4x larger, still tileable, its maps with it (backend/upscaling.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.params import AXES
from backend.upscaling import FACTORS


def add_upscale(sub) -> None:
    p = sub.add_parser(
        "upscale",
        help="make a tileable image 2x or 4x larger, seam-safe, with its maps",
        description="Enlarge IMAGE (tileable) by --factor with a wrap-aware Lanczos, then add detail: a low-denoise "
        "diffusion refine at the larger size through the windowed, wrapping path (the image itself as the "
        "IP-Adapter prompt) when the models are here, else the image's own fine detail quilted by the patch "
        "engine. The output tiles as exactly as its input. Writes OUT/<stem>-x<factor>.png, each --map beside it "
        "as <stem>-x<factor>-<name>.png and a 3x3 tiled preview, never overwriting; prints the written paths.",
    )
    p.add_argument("input", metavar="IMAGE", help="the tileable image to enlarge")
    p.add_argument("--factor", type=int, choices=FACTORS, default=2, help="2 or 4 (default 2)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", dest="maps",
                   help="a map of the same material (repeatable), enlarged with the image")
    p.add_argument("--engine", choices=("auto", "diffusion", "patch"), default="auto",
                   help="diffusion (refine), patch (weight-free) or auto: diffusion when its models are here")
    p.add_argument("--tile", choices=tuple(AXES), default="both", help="the axes the image tiles on (default both)")
    p.add_argument("--seed", type=int, help="random seed (default: random)")
    p.add_argument("--steps", type=int, default=30, help="diffusion: the schedule's steps (default 30)")
    p.add_argument("--strength", type=float, default=0.3,
                   help="diffusion: the fraction of the steps re-noised and denoised (default 0.3)")
    p.add_argument("--window", type=int, default=512, help="diffusion: window side in px (default 512)")
    p.add_argument("--base", help="SD1.5 model (as for generate)")
    p.add_argument("--ip-adapter", help="IP-Adapter (as for generate)")
    p.add_argument("--no-preview", action="store_true", help="do not write the 3x3 tiled preview")
    p.set_defaults(func=_cmd_upscale)


def _cmd_upscale(args) -> int:
    from backend.cli.generate import named_paths
    from backend.framing import tiled
    from backend.images import save_png_atomic, unique_path
    from backend.materials import variants as material
    from backend.upscaling import upscale

    result = upscale(args.input, args.factor, maps=named_paths(args.maps), engine=args.engine, seed=args.seed,
                     steps=args.steps, tile=args.tile, strength=args.strength, window=args.window, base=args.base,
                     ip_adapter=args.ip_adapter)
    out = Path(args.out)
    path = unique_path(out, f"{Path(args.input).stem}-x{args.factor}", companions=material.endings(result))
    print(save_png_atomic(result, path, parameters=result.info["parameters"]))
    for written in material.save(result, path).values():
        print(written)
    if not args.no_preview:
        print(save_png_atomic(tiled(result, 3), unique_path(out, f"{path.stem}-tiled3x3")))
    record = json.loads(result.info["parameters"])
    print(f"{record['engine']}: {record['size'][0]}x{record['size'][1]}", file=sys.stderr)
    return 0
