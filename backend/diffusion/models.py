"""Finding and loading the diffusion models: SD1.5 base + IP-Adapter, offline first.

Where a model can come from:
- base: a hub id (read from the Hugging Face cache only), a local diffusers folder, or a single-file
  SD1.5 checkpoint (`.safetensors`; `.ckpt` only with `allow_pickle`);
- IP-Adapter: a hub id or a local folder in the `h94/IP-Adapter` layout
  (`models/<weight>.safetensors` + `models/image_encoder/`), variant `standard` or `plus`.

Nothing here downloads, except `download_models()` (the `download-models` command). A model that is
not on this machine raises ModelsMissingError naming it and the command that fetches it. Loaded
models are kept in the model registry (backend.model_registry) for later calls in the same process.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from backend.diffusion.hub import CHECKPOINT_SUFFIXES, from_cache, is_hub_id, local_or_cached
from backend.errors import BadModelError, InputError, ModelsMissingError
from backend.model_registry import registry

log = logging.getLogger(__name__)

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_IP_ADAPTER = "h94/IP-Adapter"
IP_ADAPTER_WEIGHTS = {"standard": "ip-adapter_sd15", "plus": "ip-adapter-plus_sd15"}
DOWNLOAD_COMMAND = "python -m backend download-models"

# What the engine needs from the hub repositories (the fp16 files: half the download, and they are
# upcast on load where the device computes in fp32). No safety checker: textures only, no filter.
BASE_PATTERNS = [
    "model_index.json", "scheduler/*", "tokenizer/*", "feature_extractor/*",
    "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
]
# The text tower of the CLIP model that IP-Adapter's image encoder (ViT-H/14) comes from: content
# suppression (backend/diffusion/controls/style.py) subtracts its embeddings from the image embedding. The hub
# repository holds the whole CLIP model; transformers loads its text half.
DEFAULT_CONTENT_ENCODER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CONTENT_ENCODER_PATTERNS = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                            "vocab.json", "merges.txt", "special_tokens_map.json"]
IMAGE_ENCODER_PATTERNS = ["models/image_encoder/config.json", "models/image_encoder/model.safetensors"]

_ENV_DEVICE = "TEXTURE_VARIANTS_DEVICE"
_ENV_DTYPE = "TEXTURE_VARIANTS_DTYPE"
_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "float32": "float32",
           "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class ModelSpec:
    """Resolved, local locations of everything one pipeline needs (hashable: the reuse key)."""

    base: Path  # diffusers folder or single-file checkpoint
    base_single_file: bool
    base_variant: str | None  # "fp16" when the folder holds the fp16 files
    ip_adapter: Path  # folder holding models/<weight> and models/image_encoder
    ip_weight: str  # file name inside models/
    device: str
    dtype: str  # "float16" | "float32" | "bfloat16"
    allow_pickle: bool

    @property
    def ip_plus(self) -> bool:
        return "plus" in self.ip_weight


# ---------------------------------------------------------------- device and dtype


def select_device(device: str | None = None, dtype: str | None = None) -> tuple[str, str]:
    """(device, dtype): CUDA fp16, else MPS fp16, else CPU fp32; arguments or env vars override."""
    import torch

    device = device or os.environ.get(_ENV_DEVICE) or None
    dtype = dtype or os.environ.get(_ENV_DTYPE) or None
    if device in (None, "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {device!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but torch sees no CUDA GPU",
                         hint="use --device cpu, or install the CUDA build of torch (see docs/guide/development.md)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device mps was asked for but is not available", hint="use --device cpu")
    if dtype in (None, "auto"):
        dtype = "float32" if kind == "cpu" else "float16"
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", hint="use auto, float16, float32 or bfloat16")
    return device, _DTYPES[dtype]


# ---------------------------------------------------------------- resolving locations


def resolve_base(base: str | os.PathLike | None, *, allow_pickle: bool = False) -> tuple[Path, bool, str | None]:
    """(location, is_single_file, variant) of the base model."""
    value = str(base) if base is not None else DEFAULT_BASE
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise InputError(f"base model folder {path} is not a diffusers pipeline folder (no model_index.json)",
                             hint="pass a diffusers folder, a single-file .safetensors checkpoint, or a hub id")
        return path, False, _folder_variant(path)
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise InputError(f"base model file {path} is not a checkpoint", hint="pass a .safetensors file")
        if path.suffix != ".safetensors" and not allow_pickle:
            raise InputError(f"{path.name} is a pickled checkpoint: loading it can run arbitrary code",
                             hint="use a .safetensors file, or opt in with --allow-pickle if you trust it")
        return path, True, None
    if not is_hub_id(value):
        raise ModelsMissingError(f"base model {value!r} not found", hint="check the path, or pass a hub id")
    fix = DOWNLOAD_COMMAND if base is None else f"{DOWNLOAD_COMMAND} --base {value}"
    folder = from_cache(value, BASE_PATTERNS, "base model", fix)
    if not (folder / "model_index.json").exists():
        raise ModelsMissingError(f"base model {value!r} is only partly in the Hugging Face cache",
                                 hint=f"run `{fix}`")
    return folder, False, _folder_variant(folder)


def _folder_variant(folder: Path) -> str | None:
    return "fp16" if (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists() else None


def resolve_ip_adapter(ip_adapter: str | os.PathLike | None, variant: str = "standard", *,
                       allow_pickle: bool = False) -> tuple[Path, str]:
    """(folder in the h94/IP-Adapter layout, weight file name inside its models/)."""
    if variant not in IP_ADAPTER_WEIGHTS:
        raise InputError(f"unknown IP-Adapter variant {variant!r}", hint="use standard or plus")
    stem = IP_ADAPTER_WEIGHTS[variant]
    value = str(ip_adapter) if ip_adapter is not None else DEFAULT_IP_ADAPTER
    path = Path(value).expanduser()
    if path.is_dir():
        folder = path
    elif not is_hub_id(value):
        raise ModelsMissingError(f"IP-Adapter folder {value!r} not found",
                                 hint="pass a folder laid out like h94/IP-Adapter (models/…), or a hub id")
    else:
        fix = DOWNLOAD_COMMAND if ip_adapter is None else f"{DOWNLOAD_COMMAND} --ip-adapter {value}"
        if variant != "standard":
            fix += f" --ip-adapter-variant {variant}"
        folder = from_cache(value, [f"models/{stem}.safetensors", *IMAGE_ENCODER_PATTERNS], "IP-Adapter", fix)
    models = folder / "models"
    weight = f"{stem}.safetensors"
    if not (models / weight).exists():
        if allow_pickle and (models / f"{stem}.bin").exists():
            weight = f"{stem}.bin"
        else:
            raise ModelsMissingError(f"IP-Adapter weights models/{weight} missing in {folder}",
                                     hint=f"run `{DOWNLOAD_COMMAND}` or pass a folder in the h94/IP-Adapter layout")
    encoder = models / "image_encoder"
    if not (encoder / "config.json").exists():
        raise ModelsMissingError(f"IP-Adapter image encoder models/image_encoder missing in {folder}",
                                 hint=f"run `{DOWNLOAD_COMMAND}`")
    if not (encoder / "model.safetensors").exists() and not allow_pickle:
        raise ModelsMissingError(f"no model.safetensors in {encoder} (pickled weights are refused by default)",
                                 hint="add the safetensors file, or opt in with --allow-pickle if you trust it")
    return folder, weight


def resolve(base=None, ip_adapter=None, *, ip_adapter_variant: str = "standard", device: str | None = None,
            dtype: str | None = None, allow_pickle: bool = False) -> ModelSpec:
    """Everything needed to load, checked on disk; raises ModelsMissingError/InputError otherwise."""
    base_path, single, variant = resolve_base(base, allow_pickle=allow_pickle)
    ip_folder, weight = resolve_ip_adapter(ip_adapter, ip_adapter_variant, allow_pickle=allow_pickle)
    device, dtype = select_device(device, dtype)
    return ModelSpec(base_path, single, variant, ip_folder, weight, device, dtype, allow_pickle)


def available(base=None, ip_adapter=None) -> tuple[bool, str]:
    """Whether the models are on this machine (cheap: looks at files, loads nothing)."""
    try:
        resolve_base(base)
        resolve_ip_adapter(ip_adapter)
    except (ModelsMissingError, InputError) as e:
        return False, e.message
    return True, "models found locally"


def models_present() -> dict[str, bool]:
    """Which default models are in the local cache (for the service's hello)."""
    present = {}
    for key, check in (("base", lambda: resolve_base(None)),
                       ("ip_adapter", lambda: resolve_ip_adapter(None, "standard")),
                       ("ip_adapter_plus", lambda: resolve_ip_adapter(None, "plus"))):
        try:
            check()
            present[key] = True
        except (ModelsMissingError, InputError):
            present[key] = False
    return present


def resolve_content_encoder(encoder: str | os.PathLike | None = None) -> Path:
    """The folder of the CLIP text tower for content suppression (config, weights, tokenizer)."""
    value = str(encoder) if encoder is not None else DEFAULT_CONTENT_ENCODER
    fix = (f"{DOWNLOAD_COMMAND} --content-encoder" + ("" if encoder is None else f" {value}")
           + " (about 4 GB: the whole CLIP ViT-H/14, of which the text half is used), or pass "
           "--content-encoder FOLDER to generate")
    folder = local_or_cached(value, CONTENT_ENCODER_PATTERNS, "content-suppression text encoder", fix,
                             hint=f"suppress_content needs the CLIP text tower matching the IP-Adapter image "
                             f"encoder: {fix}")
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise ModelsMissingError(f"no config.json + model.safetensors of a CLIP text encoder in {folder}",
                                 hint=f"suppress_content needs the CLIP text tower matching the IP-Adapter "
                                 f"image encoder: {fix}")
    return folder


def load_content_encoder(folder: Path, device: str, dtype: str):
    """(CLIPTextModelWithProjection, CLIPTokenizer) from `folder`, kept in the model registry."""

    def build():
        import torch
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        try:
            encoder = CLIPTextModelWithProjection.from_pretrained(
                folder, torch_dtype=getattr(torch, dtype), use_safetensors=True, local_files_only=True)
            tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelsMissingError(f"could not load the content text encoder from {folder}: {e}",
                                     hint=f"pass a CLIP model folder, or the default {DEFAULT_CONTENT_ENCODER}") from e
        return encoder.to(device).eval(), tokenizer

    return registry.get("content_encoder", (folder, device, dtype), build,
                        {"path": str(folder), "device": device, "dtype": dtype})


# ---------------------------------------------------------------- loading and reuse

def load_pipeline(spec: ModelSpec):
    """The StableDiffusionPipeline with IP-Adapter for `spec`, reused while the process lives.

    One pipeline is kept at a time (SD1.5 + ViT-H is several GB): loading another replaces it.
    """

    def build():
        if spec.device == "cpu":
            from backend.diffusion import allocator

            allocator.keep_freed_memory()  # large activations reused, not page-faulted in every pass
        return _build(spec)

    return registry.get("pipeline", spec, build, describe_spec(spec))


def describe_spec(spec: ModelSpec) -> dict:
    """What hello/status report about a loaded pipeline."""
    return {"base": str(spec.base), "ip_adapter": f"{spec.ip_adapter}/models/{spec.ip_weight}",
            "device": spec.device, "dtype": spec.dtype}


def _build(spec: ModelSpec):
    import torch
    from diffusers import StableDiffusionPipeline

    dtype = getattr(torch, spec.dtype)
    common = dict(torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True)
    log.info("loading base model %s (%s, %s)", spec.base, spec.device, spec.dtype)
    try:
        if spec.base_single_file:
            pipe = StableDiffusionPipeline.from_single_file(str(spec.base), **common)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                spec.base, variant=spec.base_variant,
                # None: safetensors where present, pickled files only as the opted-in fallback
                use_safetensors=None if spec.allow_pickle else True, **common)
    except (OSError, ValueError) as e:
        _raise_if_unreadable(e, "base model", spec.base)
        hint = (f"the single-file loader needs the SD1.5 configs: run `{DOWNLOAD_COMMAND}` once"
                if spec.base_single_file else f"check the folder, or run `{DOWNLOAD_COMMAND}`")
        raise ModelsMissingError(f"could not load the base model from {spec.base}: {e}", hint=hint) from e
    log.info("loading IP-Adapter %s/models/%s", spec.ip_adapter, spec.ip_weight)
    try:
        pipe.load_ip_adapter(str(spec.ip_adapter), subfolder="models", weight_name=spec.ip_weight,
                             image_encoder_folder="image_encoder", local_files_only=True)
    except (OSError, ValueError) as e:
        _raise_if_unreadable(e, "IP-Adapter", spec.ip_adapter)
        raise ModelsMissingError(f"could not load the IP-Adapter from {spec.ip_adapter}: {e}",
                                 hint=f"check the folder layout (models/{spec.ip_weight}, models/image_encoder), "
                                 f"or run `{DOWNLOAD_COMMAND}`") from e
    pipe.to(spec.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _raise_if_unreadable(error: BaseException, what: str, where) -> None:
    """A load failure caused by damaged weight files (present, but not loadable) is a BadModelError."""
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        damaged = (isinstance(cause, (pickle.UnpicklingError, EOFError))
                   or type(cause).__name__ == "SafetensorError"
                   or "Unable to load weights from checkpoint" in str(cause))
        if damaged:
            raise BadModelError(f"the {what} in {where} has weight files that cannot be read: {error}",
                                hint="the file is truncated, corrupt or not a checkpoint: download the model "
                                f"again (`{DOWNLOAD_COMMAND}`) or replace the damaged file") from error
        cause = cause.__cause__ or cause.__context__


def loaded_specs() -> list[ModelSpec]:
    """The specs of the pipelines held in memory (benchmarks read the device and dtype from it)."""
    return registry.keys("pipeline")


# ---------------------------------------------------------------- downloading (explicit only)


def download_models(base: str | None = None, ip_adapter: str | None = None, *,
                    variants: str = "both", content_encoder: str | None = None) -> dict[str, Path]:
    """Fetch the models into the Hugging Face cache with progress bars; the only network access.

    `variants`: which IP-Adapter weights, "standard", "plus" or "both". `content_encoder`: also the
    CLIP text model for content suppression (a hub id; "" or None = not fetched).
    """
    from huggingface_hub import snapshot_download

    chosen = ("standard", "plus") if variants == "both" else (variants,)
    if not set(chosen) <= set(IP_ADAPTER_WEIGHTS):
        raise InputError(f"unknown IP-Adapter variant {variants!r}", hint="use standard, plus or both")
    weights = [f"models/{IP_ADAPTER_WEIGHTS[v]}.safetensors" for v in chosen]
    paths = {
        "base": Path(snapshot_download(base or DEFAULT_BASE, allow_patterns=BASE_PATTERNS)),
        "ip_adapter": Path(snapshot_download(ip_adapter or DEFAULT_IP_ADAPTER,
                                             allow_patterns=[*weights, *IMAGE_ENCODER_PATTERNS])),
    }
    from backend.diffusion.vae import DEFAULT_TAESD, TAESD_PATTERNS

    paths["taesd"] = Path(snapshot_download(DEFAULT_TAESD, allow_patterns=TAESD_PATTERNS))
    if content_encoder:
        paths["content_encoder"] = Path(snapshot_download(content_encoder, allow_patterns=CONTENT_ENCODER_PATTERNS))
    return paths
