"""Command line: `python -m backend <command> ...` (also installed as `texture-variants`).

One module per group of commands; each adds its sub-parsers and their handlers.
"""

from __future__ import annotations

import argparse
import logging
import sys

from backend import __version__
from backend.cli.generate import add_generate
from backend.cli.maps import add_carry_maps
from backend.cli.models import add_download_models, add_make_test_models, add_train_lgp
from backend.cli.restyle import add_restyle
from backend.cli.service import add_batch, add_serve
from backend.cli.tileable import add_make_tileable
from backend.cli.tileset import add_tileset
from backend.cli.tools import add_demo, add_metrics, add_score
from backend.cli.upscale import add_upscale
from backend.errors import TextureVariantsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Texture Variants backend: tileable structural variants of a texture.",
    )
    parser.add_argument("--version", action="version", version=f"texture-variants-backend {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate(sub)
    add_restyle(sub)
    add_make_tileable(sub)
    add_tileset(sub)
    add_upscale(sub)
    add_carry_maps(sub)
    add_make_test_models(sub)
    add_download_models(sub)
    add_train_lgp(sub)
    add_serve(sub)
    add_batch(sub)
    add_metrics(sub)
    add_score(sub)
    add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except TextureVariantsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
