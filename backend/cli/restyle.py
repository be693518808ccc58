"""The `restyle` command: a texture's look changed by a text prompt, its structure kept (see
backend/diffusion/controls/restyle.py). Shares generate's flags, progress and result writing."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli import generate as cli
from backend.params import DiffusionOptions, GenerationParams, specs

_RESTYLE_FLAGS = ("variants", "seed", "steps", "sampler", "fast_steps", "size", "tile", "negative_prompt",
                  "guidance_scale")
_RESTYLE_DIFFUSION_FLAGS = ("device", "dtype", "allow_pickle", "fast_lora", "fast_scheduler")


def _numbers(text: str, counts: tuple[int, ...], usage: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{text!r} is not {usage}")
    return values


def _point(text: str) -> list:
    values = _numbers(text, (2, 3), "X,Y or X,Y,LABEL (pixels of the input; label 1 selects, 0 excludes)")
    if len(values) == 3 and values[2] not in (0, 1):
        raise argparse.ArgumentTypeError(f"{text!r}: the label is 1 (select) or 0 (exclude)")
    return values[:2] + [int(values[2])] if len(values) == 3 else values


def _box(text: str) -> list:
    return _numbers(text, (4,), "X0,Y0,X1,Y1 (pixels of the input)")


def add_restyle(sub) -> None:
    p = sub.add_parser(
        "restyle",
        help="change a texture's look by a text prompt, keeping its structure",
        description="Restyle INPUT (any texture, e.g. a variant made earlier) by --prompt while keeping its "
        "structure (Plug-and-Play diffusion features), everywhere or where a mask says: --mask (an image, white = "
        "selected, the input's aspect ratio) or --point/--box for Segment Anything. Writes "
        "<input>-restyle-s<seed>.png per variant, its 3x3 tiled preview and, with a mask, the mask used as "
        "<result>-mask.png into --out, never overwriting a file; prints the written paths.",
    )
    p.add_argument("input", help="the texture to restyle")
    p.add_argument("--prompt", required=True, help="the new look, e.g. 'mossy bricks' or 'rusty metal'")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--strength", type=float, default=argparse.SUPPRESS,
                   help=specs(DiffusionOptions)["restyle_strength"][0].hint + f"; the default "
                   f"{specs(DiffusionOptions)['restyle_strength'][1]} is the paper's injection over 80 %% / 50 %% of "
                   "the steps")
    p.add_argument("--start", choices=("inverted", "noise"), default=argparse.SUPPRESS,
                   help="inverted (default, as the paper): generate from the input's DDIM-inverted noise, which "
                   "keeps its structure, the same result for every seed; noise: from seeded noise (more variety, "
                   "less structure). With --variants N and the inverted start, variant 1 starts from the inverted noise and "
                   "each further one from sqrt(1 - 0.3²) x it + 0.3 x its seeded noise")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--mask", help="mask image: white = selected, any size with the input's aspect ratio")
    where.add_argument("--point", type=_point, action="append", metavar="X,Y[,LABEL]",
                       help="a Segment Anything prompt point in input pixels (label 1 selects, the default; 0 "
                       "excludes); repeat for more")
    p.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a Segment Anything box in input pixels")
    p.add_argument("--mask-mode", choices=("keep-structure", "edit-inside"), default=argparse.SUPPRESS,
                   help="keep-structure (default): the structure is kept inside the mask, the rest follows the "
                   "prompt freely; edit-inside: only the masked part changes, the rest stays the input")
    p.add_argument("--sam", help="Segment Anything folder or hub id (default nielsr/slimsam-50-uniform from the "
                   "HF cache: `download-models --sam`)")
    p.add_argument("--base", help="SD1.5 model (default: from the HF cache)")
    p.add_argument("--ip-adapter", help="IP-Adapter (default: from the HF cache; the generated branch reads its "
                   "neutral image prompt)")
    generate_help = dict(cli.GENERATE_FLAGS)
    cli.add_flags(p, [(name, generate_help[name]) for name in _RESTYLE_FLAGS], GenerationParams)
    p.add_argument("--no-preview", action="store_true", help="do not write the 3x3 tiled previews")
    diffusion_help = dict(cli.DIFFUSION_FLAGS)
    cli.add_flags(p, [(name, diffusion_help[name]) for name in _RESTYLE_DIFFUSION_FLAGS], DiffusionOptions)
    p.set_defaults(func=run)


def run(args) -> int:
    given = vars(args)
    options = {name: given[name] for name in _RESTYLE_DIFFUSION_FLAGS if name in given}
    options |= {"restyle_prompt": args.prompt, "mask": args.mask, "mask_points": args.point, "mask_box": args.box,
                "sam": args.sam}
    options |= {key: given[flag] for key, flag in (("restyle_strength", "strength"), ("restyle_start", "start"),
                                                          ("mask_mode", "mask_mode"))
                if flag in given}
    params = GenerationParams.build(options, engine="diffusion", appearance="none",
                                    **{name: given[name] for name in _RESTYLE_FLAGS if name in given})
    images = cli.generate_with_progress(args, params)
    return cli.write_results(images, Path(args.out), Path(args.input).stem or "texture", "restyle",
                          preview=not args.no_preview)
