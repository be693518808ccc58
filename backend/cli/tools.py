"""`metrics` and `demo`."""

from __future__ import annotations

from backend.params import ENGINES, GenerationParams, specs


def add_metrics(sub) -> None:
    p = sub.add_parser(
        "metrics",
        help="seam, appearance, copy, structure and proportion scores of outputs against their exemplar",
        description="Print the texture metrics (docs/DESIGN.md, 'Metrics') of each OUTPUT: seam score per "
        "axis (wrap-around step / median interior step; about 1 = seamless), appearance distance "
        "(multi-scale patch sliced Wasserstein to the exemplar / the exemplar's own half-to-half "
        "distance; about 1 = as close as the exemplar is to itself) and copy score (max normalised "
        "cross-correlation of a half-size window of the output with the exemplar; 1 = a shifted copy), "
        "structure (autocorrelation distance to the exemplar / the exemplar's own half-to-half distance; "
        "high = broken regularity) and proportion (total variation distance of coarse colour histograms; "
        "0 = the same mix of colour regions, 1 = disjoint).",
    )
    p.add_argument("outputs", nargs="+", metavar="OUTPUT", help="generated images")
    p.add_argument("--exemplar", required=True, help="the reference texture they were made from")
    p.add_argument("--json", action="store_true", help="print one JSON object per output instead of a table")
    p.set_defaults(func=_cmd_metrics)


def _cmd_metrics(args) -> int:
    import json

    from backend.images import load_reference
    from backend.metrics import texture_metrics

    def read(path):  # the same input policy as references: 16-bit scaled, palettes expanded, alpha aside
        ref = load_reference(path)
        return ref.rgb.convert("L") if ref.grayscale else ref.rgb

    exemplar = read(args.exemplar)
    if not args.json:
        print(f"{'seam_x':>7} {'seam_y':>7} {'appear.':>7} {'copy':>6} {'struct.':>7} {'propor.':>7}  output")
    for path in args.outputs:
        m = texture_metrics(read(path), exemplar)
        if args.json:
            print(json.dumps({"output": path, **{k: round(v, 4) for k, v in m.items()}}))
        else:
            print(f"{m['seam_x']:7.3f} {m['seam_y']:7.3f} {m['appearance']:7.3f} {m['copy']:6.3f} "
                  f"{m['structure']:7.3f} {m['proportion']:7.3f}  {path}")
    return 0


def add_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help="the report card of an image against its reference: does it tile, is it new, same look?",
        description="Print the report card (backend/report_card.py) of IMAGE, made anywhere, as JSON: seam "
        "per tiled axis (wrap-around step / median interior step; about 1 = seamless), novelty (1 - the best "
        "normalised cross-correlation with the reference over every cyclic shift; about 0 = a shifted copy), "
        "look (patch statistics against the reference's own half-to-half distance; about 1 or less = the "
        "same look) and their verdicts tiles / new / same_look. The same card is in every generated "
        "variant's parameters record (there with the CLIP-I of the diffusion engine, which needs its models).",
    )
    p.add_argument("image", metavar="IMAGE", help="the variant (or any image) to judge")
    p.add_argument("--reference", required=True, metavar="REF", help="the texture it was made from")
    p.add_argument("--map", action="append", default=[], metavar="NAME=PATH", dest="maps",
                   help="a map of IMAGE (repeatable): judged against --reference-map NAME when given, else "
                   "by its seam alone")
    p.add_argument("--reference-map", action="append", default=[], metavar="NAME=PATH", dest="reference_maps",
                   help="the reference's map of that name (repeatable)")
    p.add_argument("--tile", choices=("both", "x", "y", "none"), default="both",
                   help="the axes IMAGE should tile along (default both)")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    import json

    from backend.cli.generate import named_paths
    from backend.images import load_reference
    from backend.materials.maps import fit, read_map
    from backend.report_card import MaterialJudge

    reference = load_reference(args.reference)
    image = load_reference(args.image)
    given = {name: fit(read_map(path, name), *reference.size)
             for name, path in named_paths(args.reference_maps, "--reference-map").items()}
    maps = {name: read_map(path, name) for name, path in named_paths(args.maps).items()}
    judge = MaterialJudge(reference.rgb, given, args.tile)
    print(json.dumps(judge.card(image.rgb.convert("L") if image.grayscale else image.rgb, maps), sort_keys=True))
    return 0


def add_demo(sub) -> None:
    from backend.demo import TEXTURES

    p = sub.add_parser(
        "demo",
        help="variants of a real CC0 texture, tiled previews and a contact sheet with metrics",
        description="Make variants of one of scikit-image's CC0 textures with the best engine available "
        "here (auto: diffusion when its models are on this machine, else the weight-free patch engine). "
        "Writes a new folder OUT/<texture>-<engine>-s<seed>/ (never overwriting anything) with the "
        "reference, the variants, a 3x3 tiled preview of each, contact_sheet.png and metrics.json; "
        "prints the metrics, the written paths, and how to get the diffusion models.",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--texture", choices=TEXTURES, default="gravel", help="which texture (default gravel)")
    p.add_argument("--variants", type=int, default=3, help="how many variants (default 3)")
    p.add_argument("--seed", type=int, help="random seed; variant i uses seed+i (default: random)")
    p.add_argument("--size", type=int, default=GenerationParams.size[0],
                   help="side of the square demo texture and its variants in px, as generate --size N "
                   "(default %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default=GenerationParams.engine,
                   help="auto (default): diffusion when its models are here, else patch")
    p.add_argument("--balance", type=float, default=GenerationParams.balance,
                   help=specs(GenerationParams)["balance"][0].hint + " (default %(default)s)")
    p.add_argument("--steps", type=int, default=GenerationParams.steps,
                   help="denoising steps of the diffusion engine (default %(default)s)")
    p.add_argument("--base", help="SD1.5 model for the diffusion engine (default: from the HF cache)")
    p.add_argument("--ip-adapter", help="IP-Adapter for the diffusion engine (default: from the HF cache)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from backend.demo import main as demo_main

    return demo_main(args)
