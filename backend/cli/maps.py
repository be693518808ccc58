"""`carry-maps`: a material's maps for a base-colour variant made anywhere (backend/materials/carry.py)."""

from __future__ import annotations

import json

from backend.cli.generate import named_paths


def add_carry_maps(sub) -> None:
    p = sub.add_parser(
        "carry-maps",
        help="rearrange a material's maps like a variant of its base colour, however the variant was made",
        description="Find, for every pixel of VARIANT (a tileable base colour made from --reference by any tool), "
        "where in the reference it came from (a wrap-around patch correspondence, converged), and gather each "
        "--map of the reference through it. The reference and its maps are centre-cropped to the variant's "
        "aspect and resized to its size when they differ. Writes <variant stem>-<name>.png (.tif for 16-bit "
        "colour and float maps) into --out atomically, never overwriting (nothing is written when a name is "
        "taken); prints the written paths, then the correspondence's fidelity as JSON on stderr.",
    )
    p.add_argument("variant", help="the variant's base colour")
    p.add_argument("--reference", required=True, help="the base colour the variant was made from")
    p.add_argument("--map", action="append", required=True, metavar="NAME=PATH", dest="maps",
                   help="one of the reference's maps, e.g. roughness=r.png, normal=n.png, height=h.tif (repeatable)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="the correspondence's random search seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from backend.materials.carry import carry_maps

    written, record = carry_maps(args.variant, args.reference, named_paths(args.maps), args.out, seed=args.seed)
    for path in written.values():
        print(path)
    print(json.dumps({k: record[k] for k in ("correspondence_rmse", "correspondence_mae", "correspondence_seconds")}),
          file=sys.stderr)
    return 0

