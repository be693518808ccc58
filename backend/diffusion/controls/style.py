"""InstantStyle (Wang et al. 2024): the image prompt as style only.

Two independent parts:

1. **Style blocks only** (`ip_mode="style"`): IP-Adapter's image attention is kept at the chosen
   scale in the style block(s) and set to 0 in every other cross-attention layer, through diffusers'
   per-block scales (`pipe.set_ip_adapter_scale(dict)`). The published SDXL style block is
   `up_blocks.0.attentions.1`: the middle transformer of the first, lowest-resolution up-block with
   attention, right after the mid-block. In SD1.5 that position is held by `up_blocks.1` (SD1.5's
   `up_blocks.0` has no attention); the authors' SD1.5 demo (InstantStyle `infer_style_sd15.py`)
   uses the whole `up_blocks.1` ("experimental, not as obvious as SDXL"), and so do we by default.
   `style_blocks` takes other names: `up_blocks.N`, `up_blocks.N.attentions.M`, `down_blocks.N[...]`,
   `mid_block`.
2. **Content suppression** (`suppress_content`): the CLIP text embedding of a description of the
   content ("bricks") is subtracted from the CLIP image embedding before IP-Adapter projects it:
   `image_embeds - λ · text_embeds`. Both are the raw projected embeddings (`image_embeds` of
   CLIPVisionModelWithProjection, `text_embeds` of CLIPTextModelWithProjection), not normalised,
   as in the authors' code; λ = `suppress_scale` (default 0.8, their SD1.5 demo's value). It needs
   the text tower trained with the image encoder (ViT-H/14: laion/CLIP-ViT-H-14-laion2B-s32B-b79K,
   see backend.diffusion.models.resolve_content_encoder), and the standard IP-Adapter, which reads that one
   global embedding (the plus variant reads patch features, where subtraction means nothing).
"""

from __future__ import annotations

import dataclasses
import re

import torch

from backend.diffusion import models
from backend.diffusion.controls.base import Control, Run
from backend.errors import InputError

_BLOCK = re.compile(r"^(?:(down|up)_blocks\.(\d+)|mid_block)(?:\.attentions\.(\d+))?$")


def scale_config(unet, blocks, scale: float) -> dict:
    """The `set_ip_adapter_scale` dict giving `scale` inside `blocks` and 0 everywhere else."""
    if isinstance(blocks, str) or not blocks or not all(isinstance(b, str) for b in blocks):
        raise InputError(f"style_blocks {blocks!r} is not a non-empty list of block names",
                         hint='e.g. ["up_blocks.1"] or ["up_blocks.1.attentions.1"]')
    config: dict = {}
    for name in blocks:
        match = _BLOCK.match(name)
        if not match:
            raise InputError(f"style block {name!r} is not a UNet attention block name",
                             hint="use up_blocks.N, up_blocks.N.attentions.M, down_blocks.N[.attentions.M] or mid_block")
        side, index, attention = match.group(1), match.group(2), match.group(3)
        if side is None:  # the mid-block has one transformer
            if attention not in (None, "0"):
                raise InputError(f"style block {name!r} does not exist", hint="mid_block has attentions.0 only")
            config["mid"] = scale
            continue
        module_list = getattr(unet, f"{side}_blocks")
        block = module_list[int(index)] if int(index) < len(module_list) else None
        if block is None or not hasattr(block, "attentions"):
            have = [f"{side}_blocks.{i}" for i, b in enumerate(module_list) if hasattr(b, "attentions")]
            raise InputError(f"style block {name!r} has no attention in this UNet", hint=f"choose among {have}")
        count = len(block.attentions)
        scales = config.setdefault(side, {}).get(f"block_{index}") or [0.0] * count
        if attention is None:
            scales = [scale] * count
        elif int(attention) < count:
            scales[int(attention)] = scale
        else:
            raise InputError(f"style block {name!r} does not exist", hint=f"{side}_blocks.{index} has "
                             f"attentions.0 to attentions.{count - 1}")
        config[side][f"block_{index}"] = scales
    return config


def content_embedding(encoder, tokenizer, text: str, device) -> torch.Tensor:
    """(1, projection_dim): the projected CLIP text embedding of `text` (no normalisation)."""
    tokens = tokenizer([text], max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").to(device)
    return encoder(input_ids=tokens.input_ids).text_embeds


def suppress(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: float) -> torch.Tensor:
    """The image embedding with `scale` x the content text embedding taken out."""
    if image_embeds.shape[-1] != text_embeds.shape[-1]:
        raise InputError(f"the content text encoder gives {text_embeds.shape[-1]}-d embeddings, the IP-Adapter "
                         f"image encoder {image_embeds.shape[-1]}-d: they are not a matching CLIP pair",
                         hint="use the text tower of the image encoder's CLIP model (ViT-H/14: "
                         "laion/CLIP-ViT-H-14-laion2B-s32B-b79K)")
    return image_embeds - scale * text_embeds.to(image_embeds.dtype)


class InstantStyle(Control):
    """Sets the per-block IP-Adapter scales (style mode) and takes the content out of the image prompt."""

    def __init__(self, params, spec, ip_scale: float):
        options = params.diffusion
        self.ip_mode, self.blocks, self.scale = params.ip_mode, tuple(options.style_blocks), ip_scale
        self.content, self.suppress_scale = params.suppress_content, float(options.suppress_scale)
        self.encoder_name, self.spec, self.content_embeds = options.content_encoder, spec, None
        self.encoder_folder = None
        if self.content:
            if spec.ip_plus:
                raise InputError("suppress_content works with the standard IP-Adapter only: the plus variant reads "
                                 "CLIP patch features, from which a text embedding cannot be subtracted",
                                 hint="use ip_adapter_variant standard, or leave suppress_content empty")
            self.encoder_folder = models.resolve_content_encoder(self.encoder_name)

    def setup(self, run: Run) -> None:
        super().setup(run)
        if self.ip_mode == "style":
            run.pipe.set_ip_adapter_scale(scale_config(run.pipe.unet, self.blocks, self.scale))
        if self.encoder_folder is not None:
            encoder, tokenizer = models.load_content_encoder(self.encoder_folder, self.spec.device, self.spec.dtype)
            self.content_embeds = content_embedding(encoder, tokenizer, self.content, run.pipe._execution_device)

    def conditioning(self, cond):
        if self.content_embeds is None:
            return cond
        return dataclasses.replace(cond, image=suppress(cond.image, self.content_embeds, self.suppress_scale))

    def cache_key(self) -> tuple:
        return (self.ip_mode, self.blocks, self.content, self.suppress_scale, str(self.encoder_name))

    def record(self) -> dict:
        return ({"style_blocks": list(self.blocks)} if self.ip_mode == "style" else {}) | (
            {"suppress_scale": self.suppress_scale} if self.content else {})


def from_params(params, spec, settings):
    if params.ip_mode == "full" and not params.suppress_content:
        return None
    return InstantStyle(params, spec, settings.ip_scale)
