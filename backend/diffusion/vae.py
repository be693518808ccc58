"""Latents and pixels: the VAE's encode and decode (tile by tile above the window size:
backend/diffusion/windows.py), and the cheap pictures of latents for previews.

Previews: with the tiny autoencoder (TAESD, `madebyollin/taesd`: diffusers' AutoencoderTiny, about
10 MB, fetched by `download-models`) when it is on this machine, else a fixed latent-to-RGB map (no
network at all, 1/8 of the size). Both are periodic with the output: TAESD's convolutions wrap
around on the tiled axes like the VAE's. `draft` decodes the final images with TAESD too (a quick
look); otherwise the final images always come from the full VAE.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image

from backend.diffusion import hub
from backend.diffusion.windows import Layout, decode_tiled, encode_tiled
from backend.errors import ModelsMissingError
from backend.framing import extent
from backend.model_registry import load_pretrained

DEFAULT_TAESD = "madebyollin/taesd"
TAESD_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
PREVIEW_SIDE = 256  # previews are at most this many pixels on a side (TAESD decodes at full size)

# Approximate latent -> RGB map of SD1.5's VAE: a preview for free, without decoding.
_LATENT_RGB = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                            [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])


def encode_reference(pipe, reference: Image.Image, size, layout: Layout | None = None) -> torch.Tensor:
    """VAE latents (scaled) of the reference at `size` (int or (w, h)), the deterministic mean of the
    posterior; tile by tile when `layout` splits it (windows.encode_tiled)."""
    width, height = extent(size)
    pixels = pipe.image_processor.preprocess(reference, height=height, width=width)
    pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    if layout is not None and layout.active:
        return encode_tiled(pipe.vae, pixels, layout) * pipe.vae.config.scaling_factor
    return pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor


def decode(pipe, latents: torch.Tensor, one_at_a_time: bool = False, layout: Layout | None = None) -> list[Image.Image]:
    """The images of `latents`; `one_at_a_time` decodes them separately (the VAE decoder's activations
    at full resolution are the largest of the call: this bounds them to one image's); tile by tile
    when `layout` splits them (windows.decode_tiled)."""
    latents = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
    tiled = layout is not None and layout.active
    batches = latents.split(1) if one_at_a_time or tiled else (latents,)
    if tiled:
        images = torch.cat([decode_tiled(pipe.vae, batch, layout) for batch in batches])
    else:
        images = torch.cat([pipe.vae.decode(batch).sample for batch in batches])
    return pipe.image_processor.postprocess(images, output_type="pil")


def latent_preview(latent: torch.Tensor) -> Image.Image:
    """A small RGB picture of a (4, h, w) latent by a fixed linear map: cheap enough for every step."""
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), _LATENT_RGB)
    image = Image.fromarray(((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().numpy(), "RGB")
    image.info["decoder"] = "latent"
    return image


# ---------------------------------------------------------------- TAESD


def resolve_taesd(location: str | os.PathLike | None = None) -> Path:
    """The folder of an AutoencoderTiny (a folder, or a hub id read from the cache only)."""
    value = str(location) if location is not None else DEFAULT_TAESD
    fix = "python -m backend download-models" + ("" if location is None else f" --taesd {value}")
    folder = hub.local_or_cached(value, TAESD_PATTERNS, "tiny autoencoder (TAESD)", fix,
                                 hint=f"pass an AutoencoderTiny folder or hub id, or run `{fix}`")
    if not all((folder / name).is_file() for name in TAESD_PATTERNS):
        raise ModelsMissingError(f"no {' + '.join(TAESD_PATTERNS)} of an AutoencoderTiny in {folder}",
                                 hint=f"run `{fix}`, or pass a folder in the {DEFAULT_TAESD} layout")
    return folder


def taesd_available(location: str | os.PathLike | None = None) -> bool:
    try:
        resolve_taesd(location)
    except ModelsMissingError:
        return False
    return True


def load_taesd(folder: Path, device: str, dtype: str):
    """The AutoencoderTiny in `folder` on `device`, kept in the model registry."""
    from diffusers import AutoencoderTiny

    model = load_pretrained("taesd", AutoencoderTiny, folder, device, dtype,
                            f"pass an AutoencoderTiny folder (the {DEFAULT_TAESD} layout)")
    # channels-last: oneDNN runs its 64-channel convolutions without reordering every activation
    # (with tiling.wrap_pad keeping the layout: 14-21 % faster on a CPU; docs/guide/speed-and-quality.md)
    return model.to(memory_format=torch.channels_last)


def taesd_decode(taesd, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """(N, 3, 8h, 8w) pixels in [0, 1] of SD latents (scaled by the VAE's `scaling_factor`)."""
    # AutoencoderTiny reads unscaled latents and returns pixels in [-1, 1] (scaling_factor 1.0 in its config).
    latents = latents.to(taesd.dtype).contiguous(memory_format=torch.channels_last)
    pixels = taesd.decode(latents / scaling_factor).sample
    return (pixels.float() / 2 + 0.5).clamp(0, 1)


def to_images(pixels: torch.Tensor, decoder: str, side: int | None = None) -> list[Image.Image]:
    """PIL images of (N, 3, H, W) pixels in [0, 1], reduced by a whole factor to at most `side` pixels
    (box averages of whole blocks: a roll by a multiple of the factor stays a roll)."""
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()
    images = []
    for array in arrays:
        image = Image.fromarray(array, "RGB")
        factor = 1 if side is None else math.ceil(max(image.size) / side)
        if factor > 1:
            image = image.reduce(factor)
        image.info["decoder"] = decoder
        images.append(image)
    return images


def taesd_previewer(taesd, scaling_factor: float, side: int = PREVIEW_SIDE):
    """latents -> small preview images by TAESD (the engine's Loop.previewer)."""

    def preview(latents: torch.Tensor) -> list[Image.Image]:
        return to_images(taesd_decode(taesd, latents, scaling_factor), "taesd", side)

    return preview


def taesd_for_call(location, draft: bool, previews: bool, device: str, dtype: str):
    """The TAESD a call uses, or None: asked for (`location` or `draft`: it must be here), else the
    default one for previews when it is on this machine (else previews use the latent map)."""
    if not draft and not previews:
        return None
    if location is None and not draft and not taesd_available():
        return None
    return load_taesd(resolve_taesd(location), device, dtype)
