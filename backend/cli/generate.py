"""`generate`: the parameter flags (derived from backend.params) and the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.params import DiffusionOptions, GenerationParams, PatchOptions, specs

# The generate flags: (parameter, help). Kinds, choices and defaults come from backend.params; a
# default of None is described in the help text; a help of None is the parameter's own (its Spec's hint).
GENERATE_FLAGS = (
    ("engine", "diffusion, patch (weight-free), or auto: diffusion when its models are here"),
    ("variants", "how many variants"),
    ("seed", "random seed; variant i uses seed+i (default: random)"),
    ("steps", "denoising steps of the diffusion engine's full sampler (the patch engine ignores it)"),
    ("sampler", "full: the model's own schedule (--steps); fast: a step-distillation LoRA fused into the UNet, "
     "--fast-steps steps, every control on the same fractions of the trajectory (download-models --fast)"),
    ("fast_steps", "--sampler fast: denoising steps (4-8)"),
    ("size", "output size in px: WxH (e.g. 1024x384) or N for N x N; 64-8192 per side, multiples of 8 for the "
     "diffusion engine"),
    ("tile", "seamless axes"),
    ("balance", None),
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
     "square; diffusion engine; docs/guide/restyle-and-sketch.md, 'Sketch guidance')"),
    ("sketch_mode", "--sketch: lgp (latent guidance predictor) or controlnet (an SD1.5 ControlNet)"),
    ("sketch_strength", None),
)


DIFFUSION_FLAGS = (
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
    ("taesd", "tiny autoencoder for the live previews: folder or hub id (default madebyollin/taesd when it "
     "is in the HF cache, else a latent colour map)"),
    ("draft", "decode the final images with the tiny autoencoder (--taesd): a quick, lower-quality look"),
    ("fast_lora", "--sampler fast: lcm (LCM-LoRA, no CFG, TCD), hyper-sd (Hyper-SD 8-step CFG, DDIM trailing), "
     "or a LoRA .safetensors file, folder or hub id"),
    ("fast_scheduler", "--sampler fast: the scheduler (default: the one --fast-lora was distilled for)"),
    ("sketch_window", "--sketch-mode lgp: the fraction of the steps, from the first, that are guided"),
    ("lgp", "--sketch-mode lgp: LGP weights: hub id, folder or file (default "
     "$TEXTURE_VARIANTS_LGP, else ogkalu/Stable-Diffusion-Latent-Guidance-Predictor from the HF cache; its .pt "
     "needs --allow-pickle)"),
    ("controlnet", "--sketch-mode controlnet: hub id or diffusers folder (default "
     "$TEXTURE_VARIANTS_CONTROLNET, else lllyasviel/control_v11p_sd15_lineart from the HF cache)"),
)


PATCH_FLAGS = (
    ("structure", "regular: keep a lattice (bricks, tiles, planks) whole; stochastic: irregular materials; "
     "auto: decided from the reference (docs/PATCH_ENGINE.md)"),
)


def extent(text: str) -> int | tuple[int, int]:
    """--size: "1024x384" (width x height) or "512" (a square); the range is GenerationParams' to check."""
    width, sep, height = text.lower().partition("x")
    if not (width.strip().isdigit() and (not sep or height.strip().isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH or N (e.g. 1024x384 or 512)")
    return (int(width), int(height)) if sep else int(width)


_KINDS = {"int": {"type": int}, "number": {"type": float}, "flag": {"action": "store_true"},
          "names": {"nargs": "+", "metavar": "BLOCK"}, "text": {}, "choice": {},
          "extent": {"type": extent, "metavar": "WxH"}}


def add_flags(group, table, cls) -> None:
    """One flag per parameter; a flag not given is left out, so the parameter keeps its default."""
    declared = specs(cls)
    for name, text in table:
        spec, default = declared[name]
        text = text or spec.hint
        kw = dict(_KINDS[spec.kind], default=argparse.SUPPRESS)
        if spec.kind == "choice":
            kw["choices"] = spec.choices
        if spec.kind == "extent":
            text += f" (default {default[0]}x{default[1]})"
        elif default not in (None, False, ""):
            text += f" (default {' '.join(default) if isinstance(default, tuple) else default})"
        if spec.kind == "text":
            kw["metavar"] = {"suppress_content": "TEXT", "sketch": "PATH", "fast_lora": "NAME"}.get(name, "PATH")
        group.add_argument("--" + name.replace("_", "-"), help=text, **kw)


def add_generate(sub) -> None:
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
    add_flags(p, GENERATE_FLAGS, GenerationParams)
    p.add_argument("--no-preview", action="store_true", help="do not write the 3x3 tiled previews")
    g = p.add_argument_group("material maps", "each variant gets one file per map beside it, "
                             "<variant stem>-<name>.png (.tif for 16-bit colour and float maps), rearranged like its "
                             "base colour (docs/guide/materials.md, 'Whole materials')")
    g.add_argument("--map", action="append", default=argparse.SUPPRESS, metavar="NAME=PATH", dest="maps",
                   help="another map of the material, e.g. roughness=r.png, normal=n.png, height=h.tif "
                   "(repeatable; names: lower-case letters, digits, _)")
    g.add_argument("--derive", default=argparse.SUPPRESS, metavar="NAMES",
                   help="maps to make from each variant's base colour, comma-separated: "
                   + ",".join(specs(GenerationParams)["derive"][0].choices))
    g.add_argument("--normals", choices=specs(GenerationParams)["normals"][0].choices, default=argparse.SUPPRESS,
                   help="how --derive normal is made: classical (from the height, default) or marigold "
                   "(needs download-models --normals)")
    add_flags(p.add_argument_group("diffusion engine"), DIFFUSION_FLAGS, DiffusionOptions)
    add_flags(p.add_argument_group("patch engine"), PATCH_FLAGS, PatchOptions)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    given = vars(args)
    fields = {name: given[name] for name, _ in GENERATE_FLAGS if name in given} | _material_fields(given)
    params = GenerationParams.build({name: given[name] for name, _ in DIFFUSION_FLAGS + PATCH_FLAGS if name in given},
                                    **fields)
    images = generate_with_progress(args, params)
    return write_results(images, Path(args.out), Path(args.input).stem or "texture", "{engine}",
                         preview=not args.no_preview)


def generate_with_progress(args, params) -> list:
    from tqdm import tqdm

    from backend.api import generate

    bar = tqdm(total=params.steps, desc="generating", unit="step", file=sys.stderr, disable=None)

    def on_step(step, total, preview):
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        return generate(args.input, params, base=args.base, ip_adapter=args.ip_adapter, on_step=on_step)
    finally:
        bar.close()


def write_results(images, out: Path, stem: str, kind: str, preview: bool) -> int:
    """Write each image as `<stem>-<kind>-s<seed>.png` (kind may name the engine: "{engine}"), its
    material maps, its 3x3 tiled preview and, for a restyle with a mask, the mask used as
    `<that stem>-mask.png`."""
    import json

    from backend.framing import tiled
    from backend.images import save_png_atomic, unique_path
    from backend.materials import variants as material

    for image in images:
        record = json.loads(image.info["parameters"])
        mask = image.info.get("restyle_mask")
        name = f"{stem}-{kind.format(engine=record['engine'])}-s{record['seed']}"
        companions = material.endings(image) + (("-mask.png",) if mask is not None else ())
        path = save_png_atomic(image, unique_path(out, name, companions=companions))
        print(path)
        for map_path in material.save(image, path).values():
            print(map_path)
        if mask is not None:
            print(save_png_atomic(mask, path.with_name(f"{path.stem}-mask.png")))
        if preview:
            print(save_png_atomic(tiled(image, 3), unique_path(out, f"{path.stem}-tiled3x3")))
    return 0


def named_paths(items, flag: str = "--map") -> dict[str, str]:
    """{name: absolute path} from repeated NAME=PATH arguments; InputError for a bad or repeated one."""
    from backend.errors import InputError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{flag} {item!r} is not NAME=PATH", hint=f"e.g. {flag} roughness=rough.png")
        if name in out:
            raise InputError(f"{flag} {name} is given twice", hint="give each map once")
        out[name] = str(Path(path).absolute())
    return out


def _material_fields(given: dict) -> dict:
    """maps / derive / normals from --map NAME=PATH (repeated), --derive a,b and --normals."""

    fields = {}
    if "maps" in given:
        fields["maps"] = named_paths(given["maps"])
    if "derive" in given:
        fields["derive"] = [name.strip() for name in given["derive"].split(",") if name.strip()]
    if "normals" in given:
        fields["normals"] = given["normals"]
    return fields
