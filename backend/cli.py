"""Command line: `python -m backend <command> ...` (also installed as `texture-variants`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from backend import __version__
from backend.errors import TextureVariantsError
from backend.params import ENGINES, DiffusionOptions, GenerationParams, PatchOptions, specs
from backend.service.jobs import DEFAULT_MAX_QUEUE

# The generate flags: (parameter, help). Kinds, choices and defaults come from backend.params; a
# default of None is described in the help text.
_GENERATE_FLAGS = (
    ("engine", "diffusion, patch (weight-free), or auto: diffusion when its models are here"),
    ("variants", "how many variants"),
    ("seed", "random seed; variant i uses seed+i (default: random)"),
    ("steps", "denoising steps of the diffusion engine (the patch engine ignores it)"),
    ("size", "output size in px, a multiple of 64"),
    ("tile", "seamless axes"),
    ("balance", "0 = new structure, 1 = closest appearance (0.5 is the published recipe)"),
    ("appearance", "appearance preservation: kv (replace the reference's keys/values), ad (attention "
     "distillation: optimise the latent towards them; slower) or none (plain IP-Adapter)"),
    ("ip_mode", "full: the image prompt in every cross-attention layer; style: only in the style block(s) "
     "(InstantStyle; SD1.5: up_blocks.1)"),
    ("suppress_content", "subtract the CLIP text embedding of TEXT (e.g. 'bricks') from the image prompt's "
     "(InstantStyle; needs the CLIP ViT-H/14 text tower, see --content-encoder)"),
    ("ip_scale", "IP-Adapter scale (default 1.0, the recipe's)"),
    ("prompt", "optional text prompt"),
    ("negative_prompt", "optional negative prompt"),
    ("guidance_scale", "classifier-free guidance (default: the engine's)"),
    ("sketch", "an image whose lines the variant's structure follows (white on black or black on white, "
     "square; diffusion engine; README 'Sketch guidance')"),
    ("sketch_mode", "--sketch: lgp (latent guidance predictor) or controlnet (an SD1.5 ControlNet)"),
    ("sketch_strength", "--sketch: how strongly the structure follows it (lgp: guidance step size in "
     "denoising steps; controlnet: conditioning scale)"),
)
_DIFFUSION_FLAGS = (
    ("ip_adapter_variant", "ip-adapter_sd15 (standard) or ip-adapter-plus_sd15 (plus)"),
    ("device", "auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N or mps"),
    ("dtype", "auto (default): float16 on a GPU, float32 on the CPU; or float16, float32, bfloat16"),
    ("allow_pickle", "also load pickled weights (.ckpt/.bin): only for files you trust"),
    ("ad_iterations", "--appearance ad: Adam iterations per step of the window"),
    ("ad_lr", "--appearance ad: Adam learning rate"),
    ("style_blocks", "--ip-mode style: the UNet blocks that get the image prompt (also up_blocks.N.attentions.M, "
     "down_blocks.N, mid_block)"),
    ("suppress_scale", "--suppress-content: how much of the text embedding to subtract"),
    ("content_encoder", "--suppress-content: CLIP text model folder or hub id (default "
     "laion/CLIP-ViT-H-14-laion2B-s32B-b79K from the HF cache)"),
    ("decode_one_at_a_time", "decode the variants with the VAE one at a time: less peak memory (8 GB GPUs), "
     "the same pictures up to float rounding"),
    ("sketch_window", "--sketch-mode lgp: the fraction of the steps, from the first, that are guided"),
    ("lgp", "--sketch-mode lgp: LGP weights: hub id, folder or file (default "
     "$TEXTURE_VARIANTS_LGP, else ogkalu/Stable-Diffusion-Latent-Guidance-Predictor from the HF cache; its .pt "
     "needs --allow-pickle)"),
    ("controlnet", "--sketch-mode controlnet: hub id or diffusers folder (default "
     "$TEXTURE_VARIANTS_CONTROLNET, else lllyasviel/control_v11p_sd15_lineart from the HF cache)"),
)
_PATCH_FLAGS = (
    ("structure", "regular: keep a lattice (bricks, tiles, planks) whole; stochastic: irregular materials; "
     "auto: decided from the reference (docs/PATCH_ENGINE.md)"),
)
_KINDS = {"int": {"type": int}, "number": {"type": float}, "flag": {"action": "store_true"},
          "names": {"nargs": "+", "metavar": "BLOCK"}, "text": {}, "choice": {}}


def _add_flags(group, table, cls) -> None:
    """One flag per parameter; a flag not given is left out, so the parameter keeps its default."""
    declared = specs(cls)
    for name, text in table:
        spec, default = declared[name]
        kw = dict(_KINDS[spec.kind], default=argparse.SUPPRESS)
        if spec.kind == "choice":
            kw["choices"] = spec.choices
        if default not in (None, False, ""):
            text += f" (default {' '.join(default) if isinstance(default, tuple) else default})"
        if spec.kind == "text":
            kw["metavar"] = {"suppress_content": "TEXT", "sketch": "PATH"}.get(name, "PATH")
        group.add_argument("--" + name.replace("_", "-"), help=text, **kw)


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
    _add_flags(p, _GENERATE_FLAGS, GenerationParams)
    p.add_argument("--no-preview", action="store_true", help="do not write the 3x3 tiled previews")
    g = p.add_argument_group("material maps", "each variant gets one file per map beside it, "
                             "<variant stem>-<name>.png (.tif for 16-bit colour), rearranged like its "
                             "base colour (README 'Whole materials')")
    g.add_argument("--map", action="append", default=argparse.SUPPRESS, metavar="NAME=PATH", dest="maps",
                   help="another map of the material, e.g. roughness=r.png, normal=n.png, height=h.tif "
                   "(repeatable; names: lower-case letters, digits, _)")
    g.add_argument("--derive", default=argparse.SUPPRESS, metavar="NAMES",
                   help="maps to make from each variant's base colour, comma-separated: "
                   + ",".join(specs(GenerationParams)["derive"][0].choices))
    g.add_argument("--normals", choices=specs(GenerationParams)["normals"][0].choices, default=argparse.SUPPRESS,
                   help="how --derive normal is made: classical (from the height, default) or marigold "
                   "(needs download-models --normals)")
    _add_flags(p.add_argument_group("diffusion engine"), _DIFFUSION_FLAGS, DiffusionOptions)
    _add_flags(p.add_argument_group("patch engine"), _PATCH_FLAGS, PatchOptions)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    import json

    from tqdm import tqdm

    from backend.api import generate
    from backend.images import save_png_atomic, tiled, unique_path
    from backend.materials import variants as material

    given = vars(args)
    fields = {name: given[name] for name, _ in _GENERATE_FLAGS if name in given} | _material_fields(given)
    params = GenerationParams.build({name: given[name] for name, _ in _DIFFUSION_FLAGS + _PATCH_FLAGS if name in given},
                                    **fields)
    out = Path(args.out)
    stem = Path(args.input).stem or "texture"
    bar = tqdm(total=params.steps, desc="generating", unit="step", file=sys.stderr, disable=None)

    def on_step(step, total, preview):
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        images = generate(args.input, params, base=args.base, ip_adapter=args.ip_adapter, on_step=on_step)
    finally:
        bar.close()
    for image in images:
        record = json.loads(image.info["parameters"])
        path = save_png_atomic(image, unique_path(out, f"{stem}-{record['engine']}-s{record['seed']}",
                                                  companions=material.endings(image)))
        print(path)
        for map_path in material.save(image, path).values():
            print(map_path)
        if not args.no_preview:
            print(save_png_atomic(tiled(image, 3), unique_path(out, f"{path.stem}-tiled3x3")))
    return 0


def _material_fields(given: dict) -> dict:
    """maps / derive / normals from --map NAME=PATH (repeated), --derive a,b and --normals."""
    from backend.errors import InputError

    fields = {}
    if "maps" in given:
        fields["maps"] = {}
        for item in given["maps"]:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError(f"--map {item!r} is not NAME=PATH", hint="e.g. --map roughness=rough.png")
            if name in fields["maps"]:
                raise InputError(f"--map {name} is given twice", hint="give each map once")
            fields["maps"][name] = str(Path(path).absolute())
    if "derive" in given:
        fields["derive"] = [name.strip() for name in given["derive"].split(",") if name.strip()]
    if "normals" in given:
        fields["normals"] = given["normals"]
    return fields


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

    return _print_paths(make_test_models(args.dir, full_size=args.full_size, seed=args.seed))


def _print_paths(paths: dict) -> int:
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
    p.add_argument("--remote", action="store_true",
                   help="clients never share this machine's files (a backend reached over ssh): inputs and "
                   "results cross the channel (upload/download requests) and jobs may only read and write "
                   "in the service's private workspace; without it, hello decides from the client's probe")
    p.set_defaults(func=_cmd_serve)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_serve(args) -> int:
    from backend.service.server import serve

    return serve(base=args.base, ip_adapter=args.ip_adapter, device=args.device, verbose=args.verbose,
                 max_queue=args.max_queue, allow_pickle=args.allow_pickle, remote=args.remote)


def _add_batch(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run many generate jobs from a JSON-lines manifest (resumable; locally or on Ray)",
        description="Run every job of MANIFEST (JSON lines: one object a line with the fields of the service's "
        "generate request: input, any generation parameter, optional output_dir relative to --out). Each job "
        "gets its own folder with a done-marker; a re-run skips complete jobs. Failed jobs are listed with "
        "their error codes in OUT/summary.json and do not stop the batch. Exit code 0 when no job failed.",
    )
    p.add_argument("manifest", help="the JSON-lines manifest (relative inputs are read from its folder)")
    p.add_argument("--out", required=True, help="the batch's output folder (created if missing)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray actors (needs `pip install .[ray]`): a new local cluster, or the cluster at "
                   "ADDRESS (e.g. auto, ray://head:10001); --out must be visible to every node")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="--ray: how many actors (default: one per GPU, else one per CPU)")
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args) -> int:
    from backend.batch import main as batch_main

    return batch_main(args)


def _add_metrics(sub) -> None:
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
    p.add_argument("--size", type=int, default=GenerationParams.size,
                   help="size in px, a multiple of 64 (default %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default=GenerationParams.engine,
                   help="auto (default): diffusion when its models are here, else patch")
    p.add_argument("--balance", type=float, default=GenerationParams.balance,
                   help="0 = new structure, 1 = closest appearance (default %(default)s)")
    p.add_argument("--steps", type=int, default=GenerationParams.steps,
                   help="denoising steps of the diffusion engine (default %(default)s)")
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
    p.add_argument("--normals", action="store_true",
                   help="also fetch the Marigold normals model (prs-eth/marigold-normals-v1-1) that "
                   "--derive normal --normals marigold uses; not fetched unless asked for")
    p.add_argument("--lgp", nargs="?", const="ogkalu/Stable-Diffusion-Latent-Guidance-Predictor", metavar="ID",
                   help="also fetch the latent guidance predictor for --sketch-mode lgp (default ID "
                   "ogkalu/Stable-Diffusion-Latent-Guidance-Predictor, a pickled .pt: generate needs --allow-pickle "
                   "for it); not fetched unless asked for")
    p.add_argument("--controlnet", nargs="?", const="lllyasviel/control_v11p_sd15_lineart", metavar="ID",
                   help="also fetch the ControlNet for --sketch-mode controlnet (default ID "
                   "lllyasviel/control_v11p_sd15_lineart, about 1.4 GB); not fetched unless asked for")
    p.set_defaults(func=_cmd_download_models)


def _cmd_download_models(args) -> int:
    from backend.diffusion.models import download_models
    from backend.diffusion.sketch_models import download

    paths = download_models(args.base, args.ip_adapter, variants=args.ip_adapter_variant,
                            content_encoder=args.content_encoder)
    paths |= download(args.lgp, args.controlnet)
    if args.normals:
        from backend.materials.marigold import download_normals

        paths["normals"] = download_normals()
    return _print_paths(paths)


def _add_train_lgp(sub) -> None:
    from backend.diffusion.lgp_training import TrainingOptions

    d = TrainingOptions()
    p = sub.add_parser(
        "train-lgp",
        help="train a latent guidance predictor (for --sketch-mode lgp) on your own textures",
        description="Train the latent guidance predictor on the images in --images: their Canny edge maps are "
        "the targets, the UNet is frozen. Writes OUT/lgp.safetensors (use it with generate --lgp OUT) and "
        "OUT/training_state.pt every --save-every steps; running it again with the same --out resumes. Prints "
        "the loss on a fixed evaluation set before and after. README 'Sketch guidance' gives timings.",
    )
    p.add_argument("--images", required=True, help="folder of texture images")
    p.add_argument("--out", required=True, help="output folder (created if missing; resumed if it holds a run)")
    p.add_argument("--base", help="SD1.5 model (default: stable-diffusion-v1-5/stable-diffusion-v1-5 from the HF cache)")
    p.add_argument("--ip-adapter", help="IP-Adapter (default: h94/IP-Adapter from the HF cache)")
    for name, kind, text in (("steps", int, "training steps in all"), ("batch_size", int, "images per step"),
                             ("lr", float, "Adam learning rate"), ("size", int, "training size in px, a multiple of 64"),
                             ("seed", int, "random seed"), ("save_every", int, "checkpoint every N steps")):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name),
                       help=f"{text} (default %(default)s)")
    p.add_argument("--device", help="torch device (default: the best one found)")
    p.add_argument("--dtype", help="auto (default), float16, float32 or bfloat16")
    p.set_defaults(func=_cmd_train_lgp)


def _cmd_train_lgp(args) -> int:
    from backend.diffusion.lgp_training import TrainingOptions, train_lgp
    from backend.errors import InputError

    if args.size % 64 or not 64 <= args.size <= 2048 or args.steps < 1 or args.batch_size < 1 or args.save_every < 1:
        raise InputError("train-lgp: --size must be a multiple of 64 from 64 to 2048; --steps, --batch-size and "
                         "--save-every at least 1", hint="see python -m backend train-lgp --help")
    options = TrainingOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr, size=args.size, seed=args.seed,
                              save_every=args.save_every, device=args.device, dtype=args.dtype)
    result = train_lgp(args.base, args.images, args.out, ip_adapter=args.ip_adapter, options=options)
    print(f"evaluation loss {result['loss_before']:.5f} -> {result['loss_after']:.5f} "
          f"({result['trained_steps']} steps in {result['seconds']:.1f} s)")
    print(result["path"])
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
    _add_train_lgp(sub)
    _add_serve(sub)
    _add_batch(sub)
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
