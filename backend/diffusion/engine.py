"""The diffusion engine: SD1.5 + IP-Adapter variants with kv replacement, exactly tileable.

One call:
1. the reference, scaled to cover the output's `size` (W x H) and centre-cropped to it
   (framing.cover: a reference of the output's aspect is only scaled), is the IP-Adapter image
   prompt (its CLIP embedding cached per texture); the text prompt is empty unless given;
2. appearance "kv": the reference is encoded by the VAE and DDIM-inverted (DDIMInverseScheduler)
   up to the noise level of the window's first step; the reference branch denoises it from there
   through the window's steps and records the K/V of the chosen self-attention layers (both cached
   per texture, see reference_cache): 2 x window UNet passes of one image, not 2 x steps;
3. the generated branch denoises fresh Gaussian noise, all variants in one batch, with
   classifier-free guidance; inside the window those layers attend with the reference's K/V;
   appearance "ad" instead refines the generated latent before each window step by attention
   distillation against the same reference K/V; `ip_mode="style"` / `suppress_content` restrict
   the image prompt to style. Each of these is a control (backend/diffusion/controls/): the loop
   below only calls the hooks of the controls the request asks for;
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

from backend.diffusion import balance, clip_similarity, controls, fast, models, samplers, streamed, vae
from backend.diffusion.controls.base import (
    GENERATED,
    REFERENCE,
    Run,
    StepState,
)
from backend.diffusion.loop import Loop, Progress, counters
from backend.diffusion.reference_cache import ReferenceCache, ReferencePlan, plan_reference
from backend.diffusion.tiling import tiling
from backend.diffusion.windows import Layout, prompt_image, windowed_controls
from backend.errors import InputError
from backend.framing import cover
from backend.materials.maps import fit
from backend.model_registry import registry

log = logging.getLogger(__name__)

NAME = "diffusion"
DEFAULT_GUIDANCE = 7.5

reference_cache = ReferenceCache()  # per texture and settings: its inversion and recordings
image_embeds_cache = ReferenceCache(64 * 2**20)  # per texture and image encoder: its image-prompt embeddings
# reference work actually done (tests, benchmarks)
_run_lock = threading.Lock()  # one generation at a time shares the loaded pipeline


def available(base=None, ip_adapter=None) -> tuple[bool, str]:
    return models.available(base, ip_adapter)


def unload() -> bool:
    """Free every loaded model (the model registry) and the reference caches; True if a model was loaded."""
    reference_cache.clear()
    image_embeds_cache.clear()
    clip_similarity.reference_embeds.clear()
    return bool(registry.unload())


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
                        image_key: tuple | None = None) -> Conditioning:
    """Text and image-prompt embeddings (controls may change them: Control.conditioning).

    With `image_key` the image-prompt embeddings are looked up in, or added to, `image_embeds_cache`.
    """
    device = pipe._execution_device
    text, text_uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt=negative_prompt or None)
    embeds = image_embeds_cache.get(image_key) if image_key is not None else None
    if embeds is None:
        counters["image_encodings"] += 1
        embeds = tuple(pipe.prepare_ip_adapter_image_embeds(reference, None, device, 1, True)[0].chunk(2))
        if image_key is not None:
            image_embeds_cache.put(image_key, embeds)
    image_uncond, image = embeds
    return Conditioning(text, text_uncond, image, image_uncond)


def initial_noise(params, latents, device, dtype) -> torch.Tensor:
    """The generated branch's starting latents: given, or variant i from a CPU generator seeded seed+i.

    Seeding on the CPU makes the noise the same on every device; one generator per variant makes
    each variant reproducible alone from its own seed.
    """
    shape = (params.variants, 4, params.height // 8, params.width // 8)
    if latents is not None:
        latents = torch.as_tensor(latents)
        if tuple(latents.shape) != shape:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}",
                             hint="pass (variants, 4, height/8, width/8) initial noise, or none")
        return latents.to(device=device, dtype=dtype)
    noise = [torch.randn((1, *shape[1:]), generator=torch.Generator("cpu").manual_seed(params.seed + i))
             for i in range(params.variants)]
    return torch.cat(noise).to(device=device, dtype=dtype)


def texture_digest(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def image_embeds_key(digest: str, spec) -> tuple:
    """The image-prompt embeddings depend on the pixels and the image encoder only."""
    return ("image_embeds", digest, spec.ip_adapter, spec.ip_weight, spec.device, spec.dtype)


def reference_key(digest: str, spec, params, ip_scale: float, active, sampling: tuple = ("full",)) -> tuple:
    """Everything the inversion and the recordings depend on (the image prompt, the sampler and the
    LoRA fused into the UNet included); the start of the reference branch keys the recordings inside
    the entry (ReferenceWork)."""
    return ("reference", digest, params.size, params.diffusion.window, params.steps, spec, params.tile, params.prompt,
            ip_scale, params.diffusion.inversion_iterations, params.diffusion.reference_passes, sampling,
            *(control.cache_key() for control in active))


def inverted_reference(loop: Loop, plan: ReferencePlan, image: Image.Image, size, iterations: int) -> torch.Tensor:
    """The reference DDIM-inverted up to the level of step `plan.start`: the cached trajectory, continued
    by the inversion steps it lacks."""
    work, count = plan.work, loop.state.steps - plan.start  # inversion steps to the start's level
    if plan.invert:
        done = len(work.trajectory)
        latents = work.trajectory[-1] if done else vae.encode_reference(loop.pipe, image, size, _photo(loop.layout))
        loop.invert(latents, iterations, count=count, done=done, trajectory=work.trajectory)
    return work.trajectory[count - 1]


def reference_work(loop: Loop, run: Run, plan: ReferencePlan, image: Image.Image, size: int,
                   iterations: int) -> None:
    """Invert the reference up to the level of step `plan.start` and run its branch from there, as
    `plan` says (or record in the inversion's own passes: `plan.in_inversion`); cache the result."""
    if not plan.branch:
        return
    if plan.in_inversion:  # the controls record in the inversion's passes: no branch
        plan.work.trajectory = []
        latents = vae.encode_reference(loop.pipe, image, size, _photo(loop.layout))
        loop.invert(latents, iterations, count=loop.state.steps - plan.start, trajectory=plan.work.trajectory,
                    record=True)
    else:
        start = inverted_reference(loop, plan, image, size, iterations)
        counters["reference_branches"] += 1
        loop.denoise(start, 1.0, REFERENCE, start=plan.start)
    plan.work.recorded[plan.start] = dict(run.recorded)
    reference_cache.put(plan.key, plan.work)


def paired_work(loop: Loop, run: Run, plan: ReferencePlan, image: Image.Image, size, iterations: int,
                noise: torch.Tensor, guidance: float, previews: bool) -> torch.Tensor:
    """Above the window: the reference branch and the generated one stepped together window by window
    (streamed.py), the recordings cached only when they fit the cache's budget; the generated latents."""
    start = inverted_reference(loop, plan, image, size, iterations)
    counters["reference_branches"] += 1
    result, kept = streamed.denoise_paired(loop, start, noise, guidance, plan.start, run.recorded,
                                           reference_cache.max_bytes, previews)
    if kept:
        plan.work.recorded[plan.start] = dict(run.recorded)
    reference_cache.put(plan.key, plan.work)  # at least the inversion, image-sized
    return result


def _photo(layout: Layout | None) -> Layout | None:
    """The windows the reference is encoded in: a photo, not periodic, so its tiles do not wrap (and
    the encoder never does)."""
    return None if layout is None else Layout(layout.height, layout.width, layout.window, "none")


def scale_map(m, reference_size, params):
    """A map of the reference's size at the scale the engine sees the reference (framing.cover)."""
    return fit(m, params.width, params.height)


def scaled_reference(reference, params) -> np.ndarray:
    """The reference as the engine sees it: the picture the maps' correspondence searches."""
    return np.asarray(cover(reference.rgb, params.size))



def generate(reference, params, *, base=None, ip_adapter=None, latents=None, on_step=None, cancel=None,
             extra_controls=(), ip_image=None):
    """The engine entry point (see backend/engines.py). `extra_controls`: controls the caller built itself
    (e.g. controls.inpaint.KeepOutside), run after the ones `params` asks for; `ip_image`: the
    IP-Adapter's image prompt when it is not the reference (a PIL image)."""
    params.check_size(NAME)  # engine "auto" is checked only now
    options = params.diffusion
    spec = models.resolve(base, ip_adapter, ip_adapter_variant=options.ip_adapter_variant, device=options.device,
                          dtype=options.dtype, allow_pickle=options.allow_pickle)
    settings = balance.settings(params.balance, ip_scale=params.ip_scale, window=options.kv_window,
                                blocks=options.kv_blocks)
    lora = fast.resolve(options.fast_lora, options.fast_scheduler) if params.sampler == samplers.FAST else None
    if lora is not None:  # every control sizes its window from params.steps: the fast schedule's
        params = params.replace(steps=params.fast_steps)
    default_guidance = DEFAULT_GUIDANCE if lora is None else lora.guidance
    guidance = default_guidance if params.guidance_scale is None else float(params.guidance_scale)
    active = controls.build(params, spec, settings) + list(extra_controls)  # checks before waiting for the lock
    layout = Layout.for_size(params.size, options.window, params.tile)
    if layout.active:
        windowed_controls(params, active)
    image = cover(reference.rgb, params.size)
    with _run_lock:
        pipe = models.load_pipeline(spec)
        fast.use(pipe, lora)
        with torch.no_grad():
            state = StepState(steps=params.steps, windows=len(layout) if layout.active else 1)
            run = Run(pipe, state, reference=reference, image=image, layout=layout if layout.active else None)
            images, info = _run(run, spec, params, settings.ip_scale, guidance, active, latents, on_step, cancel, lora,
                                layout, ip_image)
    record = {"guidance_scale": guidance, "ip_scale": settings.ip_scale, "device": spec.device, "dtype": spec.dtype,
              "ip_adapter_variant": options.ip_adapter_variant, "ip_mode": params.ip_mode, "sampler": params.sampler,
              "steps": params.steps, **({} if lora is None else {"fast_lora": str(lora.path)}),
              **({"draft": True} if options.draft else {}), **info}
    for im in images:
        im.info["engine_parameters"] = record
    return images


def _run(run, spec, params, ip_scale, guidance, active, latents, on_step, cancel, lora, layout, ip_image=None):
    pipe, image = run.pipe, run.image
    noise = initial_noise(params, latents, pipe._execution_device, pipe.unet.dtype)
    pipe.set_ip_adapter_scale(ip_scale)  # every call sets every layer's scale; controls may refine it
    for control in active:
        control.setup(run)
    prompt = prompt_image(image if ip_image is None else ip_image.convert("RGB"), layout)
    prompt_digest, digest = texture_digest(prompt), texture_digest(image)
    run.cond = encode_conditioning(pipe, prompt, params.prompt, params.negative_prompt,
                                   image_embeds_key(prompt_digest, spec))
    card_key = ("clip_i", digest, spec.ip_adapter, spec.device, spec.dtype)
    if prompt_digest == digest:  # the image prompt is the reference itself: its embedding serves the card
        clip_similarity.remember(card_key, run.cond.image, pipe)
    for control in active:
        run.cond = control.conditioning(run.cond)
    steps, iterations = params.steps, params.diffusion.inversion_iterations
    sampling = ("full",) if lora is None else lora.identity()
    plan = plan_reference(reference_cache, run, active,
                          lambda: reference_key(digest, spec, params, ip_scale, active, sampling), steps,
                          # above the window size the branch steps with the generated one (paired_work)
                          params.diffusion.reference_passes == "inversion" and not layout.active)
    passes = steps + plan.passes(steps, iterations) + sum(control.extra_passes(steps) for control in active)
    run.progress = Progress(total=passes, on_step=on_step, cancel=cancel)
    loop = Loop(pipe, run.cond, steps, run.progress, active, run.state, "ddim" if lora is None else lora.scheduler,
                layout)
    run.scheduler = loop.reference  # stateless DDIM arithmetic for the controls (sketch guidance's step size)
    # The VAE encoder reads the reference as the (non-periodic) photo it is: only the UNet, the
    # decoder and the controls' own networks wrap around, which is all the output's periodicity needs;
    # on an axis split into windows the windows wrap instead (windows.Layout.conv_mode).
    own = [module for control in active for module in control.tiled_modules()]
    options, scaling = params.diffusion, pipe.vae.config.scaling_factor
    taesd = vae.taesd_for_call(options.taesd, options.draft, on_step is not None and not layout.active,
                               spec.device, spec.dtype)
    if taesd is not None:
        loop.previewer = vae.taesd_previewer(taesd, scaling)
        own.append(taesd.decoder)
    with tiling(layout.conv_mode(), pipe.unet, pipe.vae.decoder, *own):
        if layout.active and plan.branch:
            result = paired_work(loop, run, plan, image, params.size, iterations, noise, guidance, on_step is not None)
        else:
            reference_work(loop, run, plan, image, params.size, iterations)
            result = loop.denoise(noise, guidance, GENERATED, previews=on_step is not None)
        run.progress.check()
        if options.draft:
            images = vae.to_images(vae.taesd_decode(taesd, result, scaling), "taesd")
        else:
            images = vae.decode(pipe, result, options.decode_one_at_a_time, layout)
    for control in active:
        images = control.finish(images)
    for im, similarity in zip(images, clip_similarity.similarities(pipe, image, images, card_key) or [], strict=False):
        im.info["clip_similarity"] = similarity  # the report card's CLIP-I (backend/report_card.py)
    info: dict = {"reference_recorded_in": "inversion"} if plan.in_inversion else {}
    warnings = [text for control in active for text in control.warnings()]
    for control in active:
        info |= control.record()
    for text in warnings:
        log.warning(text)
    if warnings:
        info["warnings"] = warnings
    return images, info

