"""Command line: `python -m backend <command> ...` (also installed as `texture-variants`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from backend import __version__
from backend.errors import TextureVariantsError
from backend.params import APPEARANCE_MODES, ENGINES, IP_MODES, TILE_MODES
from backend.service.jobs import DEFAULT_MAX_QUEUE


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="make tileable variants of a texture",
        description="Make tileable structural variants of INPUT. Writes one PNG per variant (its "
        "parameters in the PNG 'parameters' text chunk) and a 3x3 tiled preview of each into --out, "
        "never overwriting a file, and prints the written paths.",
    )
    p.add_argument("input", help="the reference texture (PNG, JPEG, TIFF, WebP, ...)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--base", help="SD1.5 model: hub id, diffusers folder or single .safetensors file "
                   "(default: stable-diffusion-v1-5/stable-diffusion-v1-5 from the HF cache)")
    p.add_argument("--ip-adapter", help="IP-Adapter: hub id or folder in the h94/IP-Adapter layout "
                   "(default: h94/IP-Adapter from the HF cache)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="diffusion, patch (weight-free), or auto: diffusion when its models are here (default)")
    p.add_argument("--variants", type=int, default=1, help="how many variants (default 1)")
    p.add_argument("--seed", type=int, help="random seed; variant i uses seed+i (default: random)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps of the diffusion engine (default 30; the patch engine ignores it)")
    p.add_argument("--size", type=int, default=512, help="output size in px, a multiple of 64 (default 512)")
    p.add_argument("--tile", choices=TILE_MODES, default="both", help="seamless axes (default both)")
    p.add_argument("--balance", type=float, default=0.5,
                   help="0 = new structure, 1 = closest appearance (default 0.5, the published recipe)")
    p.add_argument("--appearance", choices=APPEARANCE_MODES, default="kv",
                   help="appearance preservation: kv (replace the reference's keys/values, default), ad "
                   "(attention distillation: optimise the latent towards them; slower) or none (plain IP-Adapter)")
    p.add_argument("--ip-mode", choices=IP_MODES, default="full",
                   help="full: the image prompt in every cross-attention layer (default); style: only in the "
                   "style block(s) (InstantStyle; SD1.5: up_blocks.1)")
    p.add_argument("--suppress-content", default="", metavar="TEXT",
                   help="subtract the CLIP text embedding of TEXT (e.g. 'bricks') from the image prompt's "
                   "(InstantStyle; needs the CLIP ViT-H/14 text tower, see --content-encoder)")
    p.add_argument("--ip-scale", type=float, help="IP-Adapter scale (default 1.0, the recipe's)")
    p.add_argument("--prompt", default="", help="optional text prompt (default empty)")
    p.add_argument("--negative-prompt", default="", help="optional negative prompt")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: engine's)")
    p.add_argument("--no-preview", action="store_true", help="do not write the 3x3 tiled previews")
    diffusion = p.add_argument_group("diffusion engine")
    diffusion.add_argument("--ip-adapter-variant", choices=("standard", "plus"),
                           help="ip-adapter_sd15 (standard, default) or ip-adapter-plus_sd15 (plus)")
    diffusion.add_argument("--device", help="auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    diffusion.add_argument("--dtype", choices=("auto", "float16", "float32", "bfloat16"),
                           help="auto (default): float16 on a GPU, float32 on the CPU")
    diffusion.add_argument("--allow-pickle", action="store_true",
                           help="also load pickled weights (.ckpt/.bin): only for files you trust")
    diffusion.add_argument("--ad-iterations", type=int,
                           help="--appearance ad: Adam iterations per step of the window (default 3)")
    diffusion.add_argument("--ad-lr", type=float, help="--appearance ad: Adam learning rate (default 0.05)")
    diffusion.add_argument("--style-blocks", nargs="+", metavar="BLOCK",
                           help="--ip-mode style: the UNet blocks that get the image prompt (default up_blocks.1; "
                           "also up_blocks.N.attentions.M, down_blocks.N, mid_block)")
    diffusion.add_argument("--suppress-scale", type=float,
                           help="--suppress-content: how much of the text embedding to subtract (default 0.8)")
    diffusion.add_argument("--content-encoder",
                           help="--suppress-content: CLIP text model folder or hub id (default "
                           "laion/CLIP-ViT-H-14-laion2B-s32B-b79K from the HF cache)")
    p.set_defaults(func=_cmd_generate)


# Options of one engine, passed on only when given (other engines refuse what they do not know).
_ENGINE_OPTIONS = ("ip_adapter_variant", "device", "dtype", "allow_pickle", "ad_iterations", "ad_lr",
                   "style_blocks", "suppress_scale", "content_encoder")


def _cmd_generate(args) -> int:
    from tqdm import tqdm

    from backend.api import generate_variants
    from backend.images import save_png_atomic, tiled, unique_path

    out = Path(args.out)
    stem = Path(args.input).stem or "texture"
    bar = tqdm(total=args.steps, desc="generating", unit="step", file=sys.stderr, disable=None)

    def on_step(step, total, preview):
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        images = generate_variants(
            args.input, base=args.base, ip_adapter=args.ip_adapter, engine=args.engine,
            variants=args.variants, seed=args.seed, steps=args.steps, size=args.size, tile=args.tile,
            balance=args.balance, appearance=args.appearance, ip_scale=args.ip_scale,
            prompt=args.prompt, negative_prompt=args.negative_prompt,
            guidance_scale=args.guidance_scale, ip_mode=args.ip_mode, suppress_content=args.suppress_content,
            on_step=on_step,
            # `is not`: an explicit 0 (e.g. --ad-iterations 0) is a value, not "not given"
            **{k: getattr(args, k) for k in _ENGINE_OPTIONS if getattr(args, k) is not None and getattr(args, k) is not False},
        )
    finally:
        bar.close()
    import json

    for image in images:
        params = json.loads(image.info["parameters"])
        name = f"{stem}-{params['engine']}-s{params['seed']}"
        path = save_png_atomic(image, unique_path(out, name))
        print(path)
        if not args.no_preview:
            print(save_png_atomic(tiled(image, 3), unique_path(out, f"{path.stem}-tiled3x3")))
    return 0


def _add_make_test_models(sub) -> None:
    p = sub.add_parser(
        "make-test-models",
        help="write random-weight SD1.5 + IP-Adapter folders for tests and timings",
        description="Write DIR/sd15 (a diffusers StableDiffusionPipeline folder with the SD1.5 block "
        "layout), DIR/ip-adapter (the h94/IP-Adapter layout: models/ip-adapter_sd15.safetensors and "
        "models/image_encoder) and DIR/clip-text (the matching CLIP text tower, for --suppress-content "
        "--content-encoder DIR/clip-text) with random weights. Tiny by default; --full-size uses the real SD1.5 and "
        "ViT-H dimensions (about 5 GB on disk) for honest timings.",
    )
    p.add_argument("dir", help="output folder")
    p.add_argument("--full-size", action="store_true", help="real SD1.5 / ViT-H dimensions")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.set_defaults(func=_cmd_make_test_models)


def _cmd_make_test_models(args) -> int:
    from backend.diffusion.test_models import make_test_models

    paths = make_test_models(args.dir, full_size=args.full_size, seed=args.seed)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the backend service (JSON lines on stdin/stdout; used by the Blender extension)",
        description="Run the long-lived backend service: read requests from stdin and write events to "
        "stdout, one JSON object per line (protocol in docs/PROTOCOL.md). stdout carries protocol lines "
        "only; logs go to stderr and to a rotating file in the user cache folder "
        "($TEXTURE_VARIANTS_LOG_DIR overrides it). Opens no network socket. Exits with code 0 on a "
        "shutdown request, when stdin closes, or on SIGTERM/SIGINT, cancelling the running job.",
    )
    p.add_argument("--base", help="default SD1.5 model for generate requests that name none "
                   "(hub id, diffusers folder or single .safetensors file)")
    p.add_argument("--ip-adapter", help="default IP-Adapter for generate requests that name none")
    p.add_argument("--device", help="torch device for the diffusion engine, e.g. cuda, mps, cpu "
                   "(default: the best one found)")
    p.add_argument("--max-queue", type=_positive_int, default=DEFAULT_MAX_QUEUE, metavar="N",
                   help="how many requests may wait for the worker; more are refused with a `busy` "
                   f"error (default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--allow-pickle", action="store_true",
                   help="let jobs load pickled model weights (.ckpt/.bin): loading them can run arbitrary "
                   "code, so only for models you trust; requests cannot switch this on")
    p.set_defaults(func=_cmd_serve)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_serve(args) -> int:
    from backend.service.server import serve

    return serve(base=args.base, ip_adapter=args.ip_adapter, device=args.device, verbose=args.verbose,
                 max_queue=args.max_queue, allow_pickle=args.allow_pickle)


def _add_metrics(sub) -> None:
    p = sub.add_parser(
        "metrics",
        help="seam, appearance and copy scores of outputs against their exemplar",
        description="Print the texture metrics (docs/DESIGN.md, 'Metrics') of each OUTPUT: seam score per "
        "axis (wrap-around step / median interior step; about 1 = seamless), appearance distance "
        "(multi-scale patch sliced Wasserstein to the exemplar / the exemplar's own half-to-half "
        "distance; about 1 = as close as the exemplar is to itself) and copy score (max normalised "
        "cross-correlation of a half-size window of the output with the exemplar; 1 = a shifted copy).",
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
        print(f"{'seam_x':>7} {'seam_y':>7} {'appear.':>7} {'copy':>6}  output")
    for path in args.outputs:
        m = texture_metrics(read(path), exemplar)
        if args.json:
            print(json.dumps({"output": path, **{k: round(v, 4) for k, v in m.items()}}))
        else:
            print(f"{m['seam_x']:7.3f} {m['seam_y']:7.3f} {m['appearance']:7.3f} {m['copy']:6.3f}  {path}")
    return 0


def _add_demo(sub) -> None:
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
    p.add_argument("--size", type=int, default=512, help="size in px, a multiple of 64 (default 512)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto (default): diffusion when its models are here, else patch")
    p.add_argument("--balance", type=float, default=0.5,
                   help="0 = new structure, 1 = closest appearance (default 0.5)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps of the diffusion engine (default 30)")
    p.add_argument("--base", help="SD1.5 model for the diffusion engine (default: from the HF cache)")
    p.add_argument("--ip-adapter", help="IP-Adapter for the diffusion engine (default: from the HF cache)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from backend.demo import main as demo_main

    return demo_main(args)


def _add_download_models(sub) -> None:
    p = sub.add_parser(
        "download-models",
        help="fetch the diffusion models into the Hugging Face cache (the only command that downloads)",
        description="Download the SD1.5 base model (fp16 safetensors, about 2 GB) and h94/IP-Adapter "
        "(ip-adapter_sd15 and ip-adapter-plus_sd15 with their ViT-H image encoder, about 2.6 GB) into the "
        "Hugging Face cache (HF_HOME), with progress. Files already there are not fetched again. "
        "Afterwards everything works offline.",
    )
    p.add_argument("--base", help="hub id of the base model (default stable-diffusion-v1-5/stable-diffusion-v1-5)")
    p.add_argument("--ip-adapter", help="hub id of the IP-Adapter repository (default h94/IP-Adapter)")
    p.add_argument("--ip-adapter-variant", choices=("standard", "plus", "both"), default="both",
                   help="which IP-Adapter weights to fetch (default both)")
    p.add_argument("--content-encoder", nargs="?", const="laion/CLIP-ViT-H-14-laion2B-s32B-b79K", metavar="ID",
                   help="also fetch the CLIP text model that --suppress-content needs (default ID "
                   "laion/CLIP-ViT-H-14-laion2B-s32B-b79K, about 4 GB); not fetched unless asked for")
    p.set_defaults(func=_cmd_download_models)


def _cmd_download_models(args) -> int:
    from backend.diffusion.models import download_models

    paths = download_models(args.base, args.ip_adapter, variants=args.ip_adapter_variant,
                            content_encoder=args.content_encoder)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Texture Variants backend: tileable structural variants of a texture.",
    )
    parser.add_argument("--version", action="version", version=f"texture-variants-backend {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    _add_make_test_models(sub)
    _add_download_models(sub)
    _add_serve(sub)
    _add_metrics(sub)
    _add_demo(sub)
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
