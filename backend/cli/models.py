"""`make-test-models`, `download-models` and `train-lgp`: the commands about model files."""

from __future__ import annotations


def add_make_test_models(sub) -> None:
    p = sub.add_parser(
        "make-test-models",
        help="write random-weight SD1.5 + IP-Adapter (+ CLIP text, SAM) folders for tests and timings",
        description="Write DIR/sd15 (a diffusers StableDiffusionPipeline folder with the SD1.5 block "
        "layout), DIR/ip-adapter (the h94/IP-Adapter layout: models/ip-adapter_sd15.safetensors and "
        "models/image_encoder) and DIR/clip-text (the matching CLIP text tower, for --suppress-content "
        "--content-encoder DIR/clip-text) with random weights, and DIR/sam (a tiny Segment Anything in the SlimSAM "
        "layout, for restyle --sam DIR/sam), DIR/fast-lora (a random step-distillation LoRA in LCM-LoRA's "
        "file layout, for --sampler fast --fast-lora DIR/fast-lora) and DIR/taesd (a tiny autoencoder in the "
        "madebyollin/taesd layout, for --taesd DIR/taesd). Tiny by default; --full-size uses the real SD1.5 and "
        "ViT-H dimensions (about 5 GB on disk) for honest timings.",
    )
    p.add_argument("dir", help="output folder")
    p.add_argument("--full-size", action="store_true", help="real SD1.5 / ViT-H dimensions")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.set_defaults(func=_cmd_make_test_models)


def _cmd_make_test_models(args) -> int:
    from backend.testing.random_models import make_test_models

    return _print_paths(make_test_models(args.dir, full_size=args.full_size, seed=args.seed))


def _print_paths(paths: dict) -> int:
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def add_download_models(sub) -> None:
    p = sub.add_parser(
        "download-models",
        help="fetch the diffusion models into the Hugging Face cache (the only command that downloads)",
        description="Download the SD1.5 base model (fp16 safetensors, about 2 GB) and h94/IP-Adapter "
        "(ip-adapter_sd15 and ip-adapter-plus_sd15 with their ViT-H image encoder, about 2.6 GB) and the tiny "
        "autoencoder for live previews (madebyollin/taesd, about 10 MB) into the Hugging Face cache (HF_HOME), "
        "with progress. Files already there are not fetched again. "
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
    p.add_argument("--fast", nargs="?", const="lcm", metavar="NAME",
                   help="also fetch a step-distillation LoRA for --sampler fast: lcm (default: "
                   "latent-consistency/lcm-lora-sdv1-5, about 135 MB), hyper-sd (ByteDance/Hyper-SD's SD1.5 8-step "
                   "CFG LoRA, about 270 MB) or a hub id; not fetched unless asked for")
    p.add_argument("--sam", nargs="?", const="nielsr/slimsam-50-uniform", metavar="ID",
                   help="also fetch the Segment Anything model that restyle's --point/--box masks need (default "
                   "ID nielsr/slimsam-50-uniform: SlimSAM, about 112 MB); not fetched unless asked for")
    p.set_defaults(func=_cmd_download_models)


def _cmd_download_models(args) -> int:
    from backend.diffusion.models import download_models
    from backend.diffusion.sketch_models import download

    paths = download_models(args.base, args.ip_adapter, variants=args.ip_adapter_variant,
                            content_encoder=args.content_encoder)
    paths |= download(args.lgp, args.controlnet)
    if args.fast:
        from backend.diffusion.fast import download_fast

        paths["fast_lora"] = download_fast(args.fast)
    if args.normals:
        from backend.materials.marigold import download_normals

        paths["normals"] = download_normals()
    if args.sam:
        from backend.sam import download_sam

        paths["sam"] = download_sam(args.sam)
    return _print_paths(paths)


def add_train_lgp(sub) -> None:
    from backend.diffusion.lgp_training import TrainingOptions

    d = TrainingOptions()
    p = sub.add_parser(
        "train-lgp",
        help="train a latent guidance predictor (for --sketch-mode lgp) on your own textures",
        description="Train the latent guidance predictor on the images in --images: their Canny edge maps are "
        "the targets, the UNet is frozen. Writes OUT/lgp.safetensors (use it with generate --lgp OUT) and "
        "OUT/training_state.pt every --save-every steps; running it again with the same --out resumes. Prints "
        "the loss on a fixed evaluation set before and after. docs/guide/restyle-and-sketch.md, 'Sketch guidance' gives timings.",
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
