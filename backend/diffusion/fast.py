"""Few-step sampling: a step-distillation LoRA for SD1.5, fused into the UNet, with its scheduler.

Two published LoRAs keep the SD1.5 UNet's layout (so IP-Adapter, kv replacement, AD, ControlNet and
Plug-and-Play still apply) and sample in 4-8 steps:
- "lcm": LCM-LoRA (latent-consistency/lcm-lora-sdv1-5), guidance 1 (no classifier-free guidance:
  one UNet pass per latent and step), sampled by TCD with gamma 0, the deterministic form of the
  consistency sampler (LCM's own scheduler adds fresh noise at every step, which would tie the
  output to the noise's position and break the roll equivariance of tiling);
- "hyper-sd": Hyper-SD's 8-step CFG-preserving LoRA (ByteDance/Hyper-SD), DDIM "trailing",
  guidance 5.
`fast_lora` names one of them, or a LoRA file / folder / hub id in the same formats (kohya
`lora_unet_*` or diffusers/PEFT keys: diffusers' `load_lora_weights` reads both); `fast_scheduler`
chooses the scheduler for a LoRA of another name.

The LoRA is fused into the loaded pipeline's weights (`fuse_lora`, then the PEFT layers removed:
the UNet runs at its plain speed) and kept fused between fast calls; the weights it changed are
kept on the CPU and copied back, bit for bit, when a full call follows. The LoRA file itself is
kept in the model registry. Nothing here downloads except `download_fast` (`download-models --fast`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.diffusion import hub
from backend.errors import InputError, ModelsMissingError
from backend.model_registry import registry

DOWNLOAD_COMMAND = "python -m backend download-models --fast"
SCHEDULERS = ("tcd", "ddim-trailing")
_ADAPTER = "fast"
_FUSED = "_texture_variants_fast_lora"  # the pipeline attribute holding what is fused


@dataclass(frozen=True)
class Recipe:
    repo: str
    weight: str
    scheduler: str
    guidance: float  # the guidance scale the LoRA was distilled for (used when none is given)


RECIPES = {
    "lcm": Recipe("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors", "tcd", 1.0),
    "hyper-sd": Recipe("ByteDance/Hyper-SD", "Hyper-SD15-8steps-CFG-lora.safetensors", "ddim-trailing", 5.0),
}
DEFAULT_LORA = "lcm"


@dataclass(frozen=True)
class FastLoRA:
    """A resolved LoRA: its weights file, its scheduler and guidance (hashable: a cache key)."""

    path: Path
    scheduler: str
    guidance: float

    def identity(self) -> tuple:
        return ("fast", str(self.path), self.scheduler)


def resolve(fast_lora: str | os.PathLike | None = None, scheduler: str | None = None) -> FastLoRA:
    """The LoRA file for `fast_lora` ("lcm", "hyper-sd", a .safetensors file, a folder or a hub id),
    read from this machine only; ModelsMissingError naming `download-models --fast` when absent."""
    value = str(fast_lora) if fast_lora is not None else DEFAULT_LORA
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise InputError(f"unknown fast_scheduler {scheduler!r}", hint=f"use one of {', '.join(SCHEDULERS)}")
    recipe = RECIPES.get(value)
    if recipe is not None:
        fix = DOWNLOAD_COMMAND + ("" if value == DEFAULT_LORA else f" {value}")
        path = hub.from_cache(recipe.repo, [recipe.weight], "step-distillation LoRA", fix) / recipe.weight
        if not path.is_file():
            raise ModelsMissingError(f"{recipe.weight} is missing from the cached {recipe.repo}", hint=f"run `{fix}`")
    else:
        path = _lora_file(value)
        recipe = RECIPES["hyper-sd" if "hyper" in path.name.lower() else "lcm"]
    return FastLoRA(path, scheduler or recipe.scheduler, recipe.guidance)


def _lora_file(value: str) -> Path:
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{path.name} is not a .safetensors LoRA", hint="pass the LoRA's .safetensors file")
        return path
    if not path.is_dir():
        if not hub.is_hub_id(value):
            raise ModelsMissingError(f"fast LoRA {value!r} not found",
                                     hint="pass lcm, hyper-sd, a LoRA .safetensors file, a folder or a hub id")
        path = hub.from_cache(value, ["*.safetensors"], "step-distillation LoRA", f"{DOWNLOAD_COMMAND} {value}")
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise InputError(f"{path} holds {len(files)} .safetensors files, not one LoRA",
                         hint="pass the LoRA file itself")
    return files[0]


def lora_weights(lora: FastLoRA) -> dict:
    """The LoRA file's tensors (CPU), kept in the model registry."""
    from safetensors.torch import load_file

    return registry.get("fast_lora", lora.path, lambda: load_file(str(lora.path)),
                        {"path": str(lora.path), "scheduler": lora.scheduler})


def fused(pipe) -> FastLoRA | None:
    """The LoRA fused into `pipe` now, if any."""
    state = getattr(pipe, _FUSED, None)
    return None if state is None else state[0]


def use(pipe, lora: FastLoRA | None) -> None:
    """Make `pipe`'s weights those of `lora` fused in (None: the base model's own, exactly)."""
    if fused(pipe) == lora:
        return
    unfuse(pipe)
    if lora is not None:
        fuse(pipe, lora)


def fuse(pipe, lora: FastLoRA) -> None:
    """Load the LoRA as a PEFT adapter, keep the weights it will change, fuse it, drop the adapter."""
    try:
        pipe.load_lora_weights(dict(lora_weights(lora)), adapter_name=_ADAPTER)
    except (ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"{lora.path} is not a LoRA for this SD1.5 UNet: {e}",
                         hint="pass an SD1.5 step-distillation LoRA (LCM-LoRA or Hyper-SD's SD1.5 8-step CFG)") from e
    originals = [(layer.base_layer.weight, layer.base_layer.weight.detach().to("cpu", copy=True))
                 for model in (pipe.unet, pipe.text_encoder) for layer in model.modules()
                 if hasattr(layer, "base_layer") and hasattr(layer, "lora_A")]
    pipe.fuse_lora(adapter_names=[_ADAPTER], lora_scale=1.0)
    pipe.unload_lora_weights()  # the fused weights stay; the PEFT wrappers (and their cost) go
    setattr(pipe, _FUSED, (lora, originals))


def unfuse(pipe) -> None:
    """The base model's weights back, bit for bit (from the copies fuse kept)."""
    import torch

    state = getattr(pipe, _FUSED, None)
    if state is None:
        return
    with torch.no_grad():
        for weight, original in state[1]:
            weight.copy_(original)
    delattr(pipe, _FUSED)


def download_fast(name: str = DEFAULT_LORA) -> Path:
    """Fetch a step-distillation LoRA into the Hugging Face cache (`download-models --fast [NAME]`)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    recipe = RECIPES.get(name)
    if recipe is not None:
        return Path(hf_hub_download(recipe.repo, recipe.weight))
    return Path(snapshot_download(name, allow_patterns=["*.safetensors", "*.json"]))
