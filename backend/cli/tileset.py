"""`tileset` and `tileset-layout`: Wang tile sets of a texture, and layouts of them (backend/tileset/)."""

from __future__ import annotations

import sys
from pathlib import Path

from backend.tileset.atlas import COLOURS
from backend.tileset.make import DEFAULT_PADDING, ENGINES


def add_tileset(sub) -> None:
    p = sub.add_parser(
        "tileset",
        help="make a Wang tile set of a texture: tiles whose coded edges match, for repetition-free surfaces",
        description="Make the complete Wang tile set of INPUT with C edge colours (C**4 tiles: 16 or 81): any two "
        "tiles whose facing edges carry the same code join without a seam, so a random layout that matches codes "
        "never repeats in a grid. Writes OUT/<stem>-wang-atlas.png (the tiles in a C**2 x C**2 grid, each with "
        "--padding px around it), <stem>-wang-atlas-<name>.png per --map (.tif for float and 16-bit colour maps) "
        "and <stem>-wang.json (tile size, padding, the atlas layout and each tile's N, E, S, W codes), each "
        "atomically, never overwriting (a taken stem moves on to <stem>-2); prints the written paths. "
        "See docs/guide/tile-sets.md.",
    )
    p.add_argument("input", metavar="INPUT", help="the texture (a photo or a tileable texture)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--colours", type=int, default=2, metavar="C",
                   help=f"edge colours per direction: {' or '.join(map(str, COLOURS))} (default 2: 16 tiles)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="tile side in px, a multiple of 8 (default: half the texture's shorter side, at most 1024)")
    p.add_argument("--padding", type=int, default=DEFAULT_PADDING, metavar="PX",
                   help=f"px around each tile in the atlas, continuing its edges, so Linear sampling never bleeds "
                   f"another tile (mip levels up to log2(PX) stay clean; default {DEFAULT_PADDING})")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="patch: quilted from the texture (weight-free); diffusion: each tile's interior re-made "
                   "with its edges fixed; auto: diffusion when its models are here, else patch (default auto)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", dest="maps",
                   help="a map of the same material (repeatable; the texture's aspect), made into an atlas exactly "
                   "like the colour")
    p.add_argument("--seed", type=int, default=0, help="which samples and cuts the tiles get (default 0)")
    p.add_argument("--steps", type=int, default=None, help="diffusion: denoising steps per tile (default 30)")
    p.add_argument("--base", default=None, help="diffusion: the base model (folder, file or hub id)")
    p.add_argument("--ip-adapter", default=None, help="diffusion: the IP-Adapter weights")
    p.set_defaults(func=_cmd_tileset)

    q = sub.add_parser(
        "tileset-layout",
        help="lay out N x M cells of a tile set into one ordinary tileable image per map",
        description="Read JSON (a <stem>-wang.json from `tileset`) and its atlases, and lay out N x M cells with "
        "the layout rule Blender's Use Tile Set node group computes (each edge's code hashed from its position "
        "and --seed, wrapping with the period N x M, so the image tiles). Writes OUT/<stem>-wang-layout-NxM.png "
        "and <stem>-wang-layout-NxM-<map>.png per map, never overwriting; prints the written paths.",
    )
    q.add_argument("json", metavar="JSON", help="the tile set's <stem>-wang.json")
    q.add_argument("--cells", required=True, metavar="NxM", help="columns x rows of cells, e.g. 8x8")
    q.add_argument("--seed", type=int, default=0, help="the layout seed, as in Blender's node group (default 0)")
    q.add_argument("--out", required=True, help="output folder (created if missing)")
    q.set_defaults(func=_cmd_layout)


def _cmd_tileset(args) -> int:
    from backend.api import make_tileset
    from backend.cli.generate import named_paths

    tileset = make_tileset(args.input, colours=args.colours, size=args.size, padding=args.padding,
                           engine=args.engine, maps=named_paths(args.maps), seed=args.seed, steps=args.steps, base=args.base,
                           ip_adapter=args.ip_adapter)
    written = tileset.save(args.out, Path(args.input).stem)
    for path in written.values():
        print(path)
    g = tileset.geometry
    print(f"{g.count} tiles of {g.tile} px ({g.colours} colours, {tileset.engine} engine) in "
          f"{tileset.details['seconds']:.1f} s", file=sys.stderr)
    return 0


def _cmd_layout(args) -> int:
    from backend.api import tileset_layout
    from backend.images import save_png_unique
    from backend.materials import variants as material

    image = tileset_layout(args.json, args.cells, seed=args.seed)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = save_png_unique(image, args.out, image.info["stem"], companions=material.endings(image))
    print(path)
    for written in material.save(image, path).values():
        print(written)
    return 0
