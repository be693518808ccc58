"""The diffusion engine: SD1.5 + IP-Adapter variants with kv replacement, exactly tileable.

One call:
1. the reference (centre square, resized to `size`) is the IP-Adapter image prompt; the text
   prompt is empty unless given;
2. appearance "kv": the reference is encoded by the VAE and DDIM-inverted (DDIMInverseScheduler);
   the reference branch denoises the inverted latents and, inside the window, records the K/V of
   the chosen self-attention layers (both cached per texture, see reference_cache);
3. the generated branch denoises fresh Gaussian noise, all variants in one batch, with
   classifier-free guidance; inside the window those layers attend with the reference's K/V;
   appearance "ad" instead refines the generated latent after each window step by attention
   distillation against the same reference K/V (backend/diffusion/attention_distillation.py);
   `ip_mode="style"` / `suppress_content` restrict the image prompt to style (backend/diffusion/instant_style.py);
4. every padded Conv2d of the UNet and the VAE decoder wraps around on the tiled axes while this
   runs (the encoder reads the reference as the non-periodic photo it is).

The reference branch is run without classifier-free guidance (guidance 1), like the inversion it
replays, so that it reconstructs the reference; the generated branch's unconditional and
conditional halves both read its K/V. With guidance 1 the two branches compute the same function,
so a generated branch started from the inverted noise reproduces the reference branch exactly.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from backend.diffusion import attention_distillation, balance, instant_style, models
from backend.diffusion.kv_attention import (
    GENERATED,
    REFERENCE,
    KVController,
    kv_replacement,
    self_attention_layers,
)
from backend.diffusion.reference_cache import ReferenceCache, ReferenceWork
from backend.diffusion.tiling import tiling
from backend.errors import CancelledError, InputError
from backend.images import center_square
from backend.params import DIFFUSION_OPTIONS

log = logging.getLogger(__name__)

NAME = "diffusion"
DEFAULT_GUIDANCE = 7.5
EXTRA_KEYS = set(DIFFUSION_OPTIONS)

# Approximate latent -> RGB map of SD1.5's VAE: a preview for free, without decoding.
_LATENT_RGB = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                            [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])

reference_cache = ReferenceCache()
counters = {"inversions": 0, "reference_branches": 0}  # reference work actually done (tests, benchmarks)
_run_lock = threading.Lock()  # one generation at a time shares the loaded pipeline


def available(base=None, ip_adapter=None) -> tuple[bool, str]:
    return models.available(base, ip_adapter)


def unload() -> bool:
    """Free the loaded models and the reference cache (the service's `unload`)."""
    reference_cache.clear()
    return models.unload()


@dataclass
class Progress:
    """Counts every UNet pass of the call and reports it through `on_step`; honours `cancel`."""

    total: int
    on_step: object = None
    cancel: object = None
    done: int = 0

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError(f"generation cancelled after {self.done} of {self.total} steps")

    def advance(self, preview: Image.Image | None = None) -> None:
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total, preview)


@dataclass
class Conditioning:
    """Text and IP-Adapter embeddings, each (1, ...) for the conditional and unconditional pass."""

    text: torch.Tensor
    text_uncond: torch.Tensor
    image: torch.Tensor
    image_uncond: torch.Tensor

    def batch(self, n: int, guided: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(encoder_hidden_states, image_embeds) for n latents, uncond half first when guided."""
        text = [self.text_uncond] * n + [self.text] * n if guided else [self.text] * n
        image = [self.image_uncond] * n + [self.image] * n if guided else [self.image] * n
        return torch.cat(text), [torch.cat(image)]


def encode_conditioning(pipe, reference: Image.Image, prompt: str, negative_prompt: str,
                        content: torch.Tensor | None = None, suppress_scale: float = 0.0) -> Conditioning:
    """Text and image-prompt embeddings; `content` (a CLIP text embedding) is subtracted, times
    `suppress_scale`, from the image embedding before IP-Adapter projects it (InstantStyle)."""
    device = pipe._execution_device
    text, text_uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt=negative_prompt or None)
    image_uncond, image = pipe.prepare_ip_adapter_image_embeds(reference, None, device, 1, True)[0].chunk(2)
    if content is not None:
        image = instant_style.suppress(image, content, suppress_scale)
    return Conditioning(text, text_uncond, image, image_uncond)


def unet_eps(pipe, latents, t, cond: Conditioning, guidance: float) -> torch.Tensor:
    """The guided noise prediction for a batch of latents."""
    guided = guidance > 1.0
    n = latents.shape[0]
    text, image = cond.batch(n, guided)
    model_in = torch.cat([latents, latents]) if guided else latents
    eps = pipe.unet(model_in, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": image}).sample
    if guided:
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)
    return eps


def encode_reference(pipe, reference: Image.Image, size: int) -> torch.Tensor:
    """VAE latents (scaled) of the reference, the deterministic mean of the posterior."""
    pixels = pipe.image_processor.preprocess(reference, height=size, width=size)
    pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    return pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor


def _schedulers(pipe, steps: int):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    # clip_sample off: SD latents are not confined to [-1, 1] (configs that omit it default to on).
    forward = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    forward.set_timesteps(steps, device=pipe._execution_device)
    inverse.set_timesteps(steps, device=pipe._execution_device)
    return forward, inverse


def invert(pipe, latents: torch.Tensor, cond: Conditioning, steps: int, progress: Progress,
           iterations: int = 0) -> torch.Tensor:
    """DDIM inversion (guidance 1): the noise that the reference branch denoises back to `latents`.

    Plain DDIM inversion evaluates the UNet at the previous, less noisy latent; `iterations` > 0
    refines each step by fixed-point iteration so that the UNet is evaluated at the latent it
    produces, which is what the denoising step will see (ReNoise, Garibi et al. 2024). Useful when
    the noise prediction varies fast with the latent, as in the random-weight test models.
    """
    _, inverse = _schedulers(pipe, steps)
    counters["inversions"] += 1
    for t in inverse.timesteps:
        start = latents
        for _ in range(1 + iterations):
            progress.check()
            latents = inverse.step(unet_eps(pipe, latents, t, cond, 1.0), t, start).prev_sample
            progress.advance()
    return latents


def denoise(pipe, latents: torch.Tensor, cond: Conditioning, steps: int, guidance: float, progress: Progress,
            controller: KVController | None = None, branch: str | None = GENERATED, previews: bool = False,
            after_step=None):
    """DDIM denoising of a batch; `controller` (if any) is told which branch and step is running.

    `after_step(i, t, latents) -> latents` may refine the latents each step produced (AD mode).
    """
    forward, _ = _schedulers(pipe, steps)
    for i, t in enumerate(forward.timesteps):
        progress.check()
        if controller is not None:
            controller.branch, controller.step = branch, i
        out = forward.step(unet_eps(pipe, latents, t, cond, guidance), t, latents)
        latents = out.prev_sample
        progress.advance(latent_preview(out.pred_original_sample[0]) if previews else None)
        if after_step is not None:
            latents = after_step(i, t, latents)
    return latents


def distillation_step(pipe, controller: KVController, cond: Conditioning, progress: Progress, iterations: int,
                      lr: float):
    """The `after_step` of AD mode: inside the window, refine the latents the step produced against
    the reference K/V of that step, with the UNet at that step's timestep (where the K/V were
    recorded); one progress tick per iteration, cancel checked before each."""

    def after_step(i, t, latents):
        if i not in controller.window or iterations == 0:
            return latents
        text, image = cond.batch(latents.shape[0], guided=False)
        return attention_distillation.optimise_latents(
            pipe.unet, latents, t, controller, i, text, image, iterations=iterations, lr=lr,
            before_iteration=progress.check, after_iteration=lambda k, loss: progress.advance())

    return after_step


def latent_preview(latent: torch.Tensor) -> Image.Image:
    """A small RGB picture of a (4, h, w) latent by a fixed linear map: cheap enough for every step."""
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), _LATENT_RGB)
    return Image.fromarray(((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().numpy(), "RGB")


def decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    images = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(images, output_type="pil")


def initial_noise(params, latents, device, dtype) -> torch.Tensor:
    """The generated branch's starting latents: given, or variant i from a CPU generator seeded seed+i.

    Seeding on the CPU makes the noise the same on every device; one generator per variant makes
    each variant reproducible alone from its own seed.
    """
    shape = (params.variants, 4, params.size // 8, params.size // 8)
    if latents is not None:
        latents = torch.as_tensor(latents)
        if tuple(latents.shape) != shape:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}",
                             hint="pass (variants, 4, size/8, size/8) initial noise, or none")
        return latents.to(device=device, dtype=dtype)
    noise = [torch.randn((1, *shape[1:]), generator=torch.Generator("cpu").manual_seed(params.seed + i))
             for i in range(params.variants)]
    return torch.cat(noise).to(device=device, dtype=dtype)


def reference_key(image: Image.Image, spec, params, kv: balance.KVSettings) -> tuple:
    """Everything the inverted latents and the reference K/V depend on (the image prompt included)."""
    digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
    extra = params.extra
    iterations = extra.get("inversion_iterations", 0)
    style = (params.ip_mode, tuple(extra.get("style_blocks", instant_style.DEFAULT_STYLE_BLOCKS)),
             params.suppress_content, extra.get("suppress_scale", instant_style.DEFAULT_SUPPRESS_SCALE),
             str(extra.get("content_encoder")))
    return (digest, params.size, params.steps, spec, params.tile, params.prompt, kv.ip_scale, iterations, style)


def _check_extra(extra: dict) -> None:
    unknown = set(extra) - EXTRA_KEYS
    if unknown:
        raise InputError(f"unknown parameter(s) for the diffusion engine: {sorted(unknown)}",
                         hint=f"known extras: {sorted(EXTRA_KEYS)}")
    iterations = extra.get("inversion_iterations", 0)
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 0 <= iterations <= 20:
        raise InputError(f"invalid inversion_iterations={iterations!r}", hint="an integer from 0 to 20")
    ad_iterations = extra.get("ad_iterations", attention_distillation.DEFAULT_ITERATIONS)
    if (not isinstance(ad_iterations, int) or isinstance(ad_iterations, bool)
            or not 0 <= ad_iterations <= attention_distillation.MAX_ITERATIONS):
        raise InputError(f"invalid ad_iterations={ad_iterations!r}",
                         hint=f"an integer from 0 to {attention_distillation.MAX_ITERATIONS} (default "
                         f"{attention_distillation.DEFAULT_ITERATIONS})")
    for name, default in (("ad_lr", attention_distillation.DEFAULT_LR),
                          ("suppress_scale", instant_style.DEFAULT_SUPPRESS_SCALE)):
        value = extra.get(name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 10.0:
            raise InputError(f"invalid {name}={value!r}", hint=f"a number from 0 to 10 (default {default})")


def generate(reference, params, *, base=None, ip_adapter=None, latents=None, on_step=None, cancel=None):
    """The engine entry point (see backend/engines.py)."""
    extra = params.extra
    _check_extra(extra)
    spec = models.resolve(base, ip_adapter, ip_adapter_variant=extra.get("ip_adapter_variant", "standard"),
                          device=extra.get("device"), dtype=extra.get("dtype"),
                          allow_pickle=bool(extra.get("allow_pickle", False)))
    kv = balance.settings(params.balance, ip_scale=params.ip_scale, window=extra.get("kv_window"),
                          blocks=extra.get("kv_blocks"))
    guidance = DEFAULT_GUIDANCE if params.guidance_scale is None else float(params.guidance_scale)
    content_folder = None
    if params.suppress_content:
        if spec.ip_plus:
            raise InputError("suppress_content works with the standard IP-Adapter only: the plus variant reads "
                             "CLIP patch features, from which a text embedding cannot be subtracted",
                             hint="use ip_adapter_variant standard, or leave suppress_content empty")
        content_folder = models.resolve_content_encoder(extra.get("content_encoder"))
    blocks = extra.get("style_blocks", instant_style.DEFAULT_STYLE_BLOCKS)
    if isinstance(blocks, str) or not isinstance(blocks, (list, tuple)):  # names are checked on the UNet
        raise InputError(f"style_blocks {blocks!r} is not a list of block names", hint='e.g. ["up_blocks.1"]')
    image = center_square(reference.rgb, params.size)
    with _run_lock:
        pipe = models.load_pipeline(spec)
        with torch.no_grad():
            content = None
            if content_folder is not None:
                encoder, tokenizer = models.load_content_encoder(content_folder, spec.device, spec.dtype)
                content = instant_style.content_embedding(encoder, tokenizer, params.suppress_content,
                                                          pipe._execution_device)
            images, info = _run(pipe, spec, image, params, kv, guidance, latents, on_step, cancel, content)
    record = {
        "guidance_scale": guidance, "ip_scale": kv.ip_scale, "device": spec.device, "dtype": spec.dtype,
        "ip_adapter_variant": extra.get("ip_adapter_variant", "standard"), **info,
    }
    for im in images:
        im.info["engine_parameters"] = record
    return images


def _run(pipe, spec, image, params, kv, guidance, latents, on_step, cancel, content=None):
    device, dtype = pipe._execution_device, pipe.unet.dtype
    extra = params.extra
    noise = initial_noise(params, latents, device, dtype)
    style_blocks = tuple(extra.get("style_blocks", instant_style.DEFAULT_STYLE_BLOCKS))
    instant_style.apply_scales(pipe, params.ip_mode, kv.ip_scale, style_blocks)
    suppress_scale = float(extra.get("suppress_scale", instant_style.DEFAULT_SUPPRESS_SCALE))
    cond = encode_conditioning(pipe, image, params.prompt, params.negative_prompt, content, suppress_scale)
    info, controller, work, key = {"ip_mode": params.ip_mode}, None, None, None
    if params.ip_mode == "style":
        info["style_blocks"] = list(style_blocks)
    if content is not None:
        info["suppress_scale"] = suppress_scale
    need_reference = need_inversion = False
    ad_iterations = extra.get("ad_iterations", attention_distillation.DEFAULT_ITERATIONS)
    ad_lr = float(extra.get("ad_lr", attention_distillation.DEFAULT_LR))
    window = frozenset()
    if params.appearance in ("kv", "ad"):
        window = kv.window_steps(params.steps)
        controller = KVController(frozenset(self_attention_layers(pipe.unet, kv.blocks)), window)
        if window:  # an empty window (balance 0) needs no reference work at all
            key = reference_key(image, spec, params, kv)
            work = reference_cache.get(key)
            controller.store.update(work.kv if work else {})
            need_reference = bool(controller.missing())
            need_inversion = work is None
        info |= {"kv_blocks": list(kv.blocks), "kv_window_steps": sorted(window),
                 "reference_cached": bool(window) and not need_inversion}
        if params.appearance == "ad":
            info |= {"ad_iterations": ad_iterations, "ad_lr": ad_lr}
    iterations = extra.get("inversion_iterations", 0)
    distill_passes = len(window) * ad_iterations if params.appearance == "ad" else 0
    progress = Progress(total=params.steps * (1 + need_inversion * (1 + iterations) + need_reference)
                        + distill_passes, on_step=on_step, cancel=cancel)

    # The VAE encoder reads the reference as the (non-periodic) photo it is: only the UNet and the
    # decoder wrap around, which is all the periodicity of the output depends on.
    with tiling(params.tile, pipe.unet, pipe.vae.decoder):
        if controller is None:
            result = denoise(pipe, noise, cond, params.steps, guidance, progress, previews=True)
        else:
            with kv_replacement(pipe.unet, controller):
                if need_inversion:
                    latents0 = encode_reference(pipe, image, params.size)
                    work = ReferenceWork(invert(pipe, latents0, cond, params.steps, progress, iterations))
                if need_reference:
                    counters["reference_branches"] += 1
                    denoise(pipe, work.inverted, cond, params.steps, 1.0, progress, controller, REFERENCE)
                    work.kv = dict(controller.store)
                    reference_cache.put(key, work)
                if params.appearance == "kv":
                    result = denoise(pipe, noise, cond, params.steps, guidance, progress, controller, GENERATED,
                                     previews=True)
                else:  # ad: the generated branch runs the original processors, then is distilled
                    result = denoise(pipe, noise, cond, params.steps, guidance, progress, controller, None,
                                     previews=True, after_step=distillation_step(pipe, controller, cond, progress,
                                                                                 ad_iterations, ad_lr))
        progress.check()
        return decode(pipe, result), info
