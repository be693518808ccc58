"""The diffusion half of `upscale` (backend/upscaling.py): a low-denoise refine at the larger size.

The enlarged image is encoded (tile by tile above the window, every convolution and tile wrapping
around on the tiled axes: the input is tileable, so its encoding is periodic too), noised to the
level of step `(1 - upscale_strength) * steps` and denoised from there with the image itself (the
input at its own size) as the IP-Adapter prompt, through the windowed loop of the engine. No
reference branch: the structure comes from the image's own latents.
"""

from __future__ import annotations

import torch
from PIL import Image

from backend.diffusion import engine, models
from backend.diffusion.controls.base import GENERATED, StepState
from backend.diffusion.loop import Loop, Progress
from backend.diffusion.tiling import tiling
from backend.diffusion.vae import decode, encode_reference
from backend.diffusion.windows import Layout


def start_step(steps: int, strength: float) -> int:
    """The first denoising step run: strength 0 runs none, 1 all of them."""
    return min(steps, max(0, round(steps * (1.0 - strength))))


def refine(image: Image.Image, prompt: Image.Image, params, *, base=None, ip_adapter=None, on_step=None,
           cancel=None) -> Image.Image:
    """`image` (RGB, the output's size) refined; params: a GenerationParams (steps, seed, tile,
    guidance_scale, ip_scale, prompt, negative_prompt, diffusion.window / upscale_strength / device...)."""
    options = params.diffusion
    spec = models.resolve(base, ip_adapter, ip_adapter_variant=options.ip_adapter_variant, device=options.device,
                          dtype=options.dtype, allow_pickle=options.allow_pickle)
    guidance = engine.DEFAULT_GUIDANCE if params.guidance_scale is None else float(params.guidance_scale)
    layout = Layout.for_size(image.size, options.window, params.tile)
    start = start_step(params.steps, options.upscale_strength)
    with engine._run_lock:
        pipe = models.load_pipeline(spec)
        with torch.no_grad():
            pipe.set_ip_adapter_scale(1.0 if params.ip_scale is None else params.ip_scale)
            cond = engine.encode_conditioning(pipe, prompt, params.prompt, params.negative_prompt)
            progress = Progress(total=params.steps - start, on_step=on_step, cancel=cancel)
            loop = Loop(pipe, cond, params.steps, progress, (), StepState(steps=params.steps), layout=layout)
            device = pipe._execution_device
            with tiling(layout.conv_mode(), pipe.unet, pipe.vae.decoder, pipe.vae.encoder):
                latents = encode_reference(pipe, image, image.size, layout)
                if start < params.steps:
                    noise = torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(params.seed))
                    t = loop.forward.timesteps[start:start + 1]
                    latents = loop.forward.add_noise(latents, noise.to(device, latents.dtype), t)
                    latents = loop.denoise(latents, guidance, GENERATED, start=start)
                progress.check()
                (out,) = decode(pipe, latents, layout=layout)
    return out
