"""The `make-tileable` command: a photo or scan made to tile, at its own size (backend/tileable.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.tileable import FLATTENS, TILES


def add_make_tileable(sub) -> None:
    p = sub.add_parser(
        "make-tileable",
        help="make a photo or scan tile, at its own size and aspect, keeping its content outside the seams",
        description="Level the lighting of INPUT (a wide blur of its luminance divided out, keeping its mean "
        "colour), then re-make a band along its seams by quilting from the image itself, so that it tiles "
        "exactly; every pixel outside the band keeps the (levelled) input's value. Writes OUT/<stem>-tileable.png "
        "(its record in the PNG's parameters chunk: band, seams before and after, the share of pixels kept), "
        "the re-made band as <stem>-tileable-band.png and each --map repaired alike as "
        "<stem>-tileable-<name>.png, never overwriting; prints the written paths.",
    )
    p.add_argument("input", metavar="INPUT", help="the image to make tileable")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--engine", choices=("auto", "patch", "diffusion"), default="auto",
                   help="auto and patch: the weight-free repair, every pixel outside the band kept (default auto); "
                   "diffusion: then the band generated anew in the input's look (needs the models; sides "
                   "multiples of 8)")
    p.add_argument("--band", type=int, default=None, metavar="PX",
                   help="width of the re-made band (default: a few texture features, at least one lattice period)")
    p.add_argument("--flatten", choices=FLATTENS, default="auto",
                   help="level the lighting: auto (when opposite borders differ by more than 3%% in brightness), "
                   "on or off (default auto)")
    p.add_argument("--tile", choices=TILES, default="both", help="the axes to make tile (default both)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", dest="maps",
                   help="a map of the same material (repeatable), repaired exactly like the colour")
    p.add_argument("--seed", type=int, default=0, help="diffusion: the band's random seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="diffusion: denoising steps (default the engine's)")
    p.add_argument("--base", default=None, help="diffusion: the SD1.5 model (as for generate)")
    p.add_argument("--ip-adapter", default=None, help="diffusion: the IP-Adapter (as for generate)")
    p.set_defaults(func=_cmd_make_tileable)


def _cmd_make_tileable(args) -> int:
    from backend.api import make_tileable
    from backend.cli.generate import named_paths
    from backend.images import save_png_atomic, unique_path
    from backend.materials import variants as material

    result = make_tileable(args.input, engine=args.engine, band=args.band, flatten=args.flatten, tile=args.tile,
                           maps=named_paths(args.maps), seed=args.seed, steps=args.steps, base=args.base,
                           ip_adapter=args.ip_adapter)
    out = Path(args.out)
    stem = f"{Path(args.input).stem}-tileable"
    path = unique_path(out, stem, companions=("-band.png", *material.endings(result)))
    print(save_png_atomic(result, path))
    print(save_png_atomic(result.info["band"], path.with_name(f"{path.stem}-band.png")))
    for written in material.save(result, path).values():
        print(written)
    record = json.loads(result.info["parameters"])
    seams = ", ".join(f"{a} {record['seam_before'][a]:.2f} -> {record['seam_after'][a]:.2f}" for a in record["seam_after"])
    print(f"seam {seams}; band {record['band']} px; {100 * record['kept']:.1f} % of the pixels kept; "
          f"lighting {'levelled' if record['flatten'] else 'kept'}", file=sys.stderr)
    return 0

