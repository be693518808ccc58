"""The VAE side of a call: the reference encoded, the result decoded (whole, or tile by tile above
the window size: backend/diffusion/windows.py), and a free preview of a latent."""

from __future__ import annotations

import torch
from PIL import Image

from backend.diffusion.windows import Layout, decode_tiled, encode_tiled
from backend.images import extent

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


def latent_preview(latent: torch.Tensor) -> Image.Image:
    """A small RGB picture of a (4, h, w) latent by a fixed linear map: cheap enough for every step."""
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), _LATENT_RGB)
    return Image.fromarray(((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().numpy(), "RGB")


def decode(pipe, latents: torch.Tensor, one_at_a_time: bool = False, layout: Layout | None = None) -> list[Image.Image]:
    """The images of `latents`; `one_at_a_time` decodes them separately (the VAE decoder's activations
    at full resolution are the largest of the call: this bounds them to one image's); tile by tile
    when `layout` splits them (windows.decode_tiled)."""
    latents = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
    batches = latents.split(1) if one_at_a_time or (layout is not None and layout.active) else (latents,)
    if layout is not None and layout.active:
        images = torch.cat([decode_tiled(pipe.vae, batch, layout) for batch in batches])
    else:
        images = torch.cat([pipe.vae.decode(batch).sample for batch in batches])
    return pipe.image_processor.postprocess(images, output_type="pil")
