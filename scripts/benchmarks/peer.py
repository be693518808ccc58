"""What the product is compared with: diffusers' own pipeline, and the engine as it was before #12.

- `diffusers_call`: `StableDiffusionPipeline` after `load_ip_adapter` (the engine's loaded modules,
  shared), DDIM like the engine, the same size, steps, guidance and N images per prompt: what a user
  would run instead of the product (no tiling, the image encoder runs every call).
- `as_before`: the engine with its earlier costs put back for a side-by-side "before" row: two padded
  copies per wrapped convolution (one per axis), the image-prompt embedding computed every call,
  and (`full_replay`) the reference branch and the inversion over all steps instead of the kv window.

Every case runs in the benchmark's one process, with the allocator setting the engine applies when
it loads (backend/diffusion/allocator.py): diffusers' pipeline and the "before" rows get it too, so
these rows compare the computation, not the allocator (switching the allocator back and forth
inside one process makes the case after the switch pay for re-growing the heap). A user's own
diffusers process would not have it; the allocator's share is measured apart (allocator.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable


def diffusers_call(pipe, reference, setup, guidance: float) -> Callable[[int], list]:
    """N images from diffusers' StableDiffusionPipeline (+ IP-Adapter) on the engine's modules."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    peer = StableDiffusionPipeline.from_pipe(pipe, scheduler=scheduler)
    peer.set_progress_bar_config(disable=True)
    image = reference.convert("RGB")

    def call(n: int) -> list:
        peer.set_ip_adapter_scale(1.0)  # the engine's default; engine calls set it per call too
        generator = torch.Generator("cpu").manual_seed(setup.seed)
        return peer(prompt="", ip_adapter_image=image, num_inference_steps=setup.steps, height=setup.size,
                    width=setup.size, guidance_scale=guidance, num_images_per_prompt=n, generator=generator).images

    return call


def _two_pad_forward(conv, wrap_x: bool, wrap_y: bool):
    """The wrapped convolution as it was: one padded copy per axis, then an unpadded convolution."""
    import torch.nn.functional as F

    pad_y, pad_x = conv.padding

    def forward(input, weight, bias):
        x = F.pad(input, (pad_x, pad_x, 0, 0), mode="circular" if wrap_x else "constant")
        x = F.pad(x, (0, 0, pad_y, pad_y), mode="circular" if wrap_y else "constant")
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return forward


@contextlib.contextmanager
def as_before(full_replay: bool):
    """Inside the block the engine pays what it paid before #12 (see the module docstring)."""
    from unittest import mock

    from backend.diffusion import engine, tiling
    from backend.diffusion.controls.kv import KVReplacement
    from backend.diffusion.reference_cache import ReferenceCache

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(tiling, "_tiled_conv_forward", _two_pad_forward))
        stack.enter_context(mock.patch.object(engine, "image_embeds_cache", ReferenceCache(0)))
        if full_replay:
            stack.enter_context(mock.patch.object(KVReplacement, "reference_steps",
                                                  lambda self, steps: frozenset(range(steps))))
        yield
