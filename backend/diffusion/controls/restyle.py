"""Restyle: a texture's look changed by a text prompt while its structure is kept, everywhere or
where a mask says (Plug-and-Play features, controls/pnp.py; masks: backend/masks.py, backend/sam.py).

- The generated branch reads `restyle_prompt` (guided against the negative prompt) and a neutral
  image prompt (IP-Adapter's unconditional embedding in both guidance halves): the look comes from
  the text alone.
- The source (the inversion and the reference branch) reads the empty prompt only, IP-Adapter off
  (scale 0), as the reference code's source branch: its own cache entry, not kv's.
- restyle_start "inverted" (default, as the paper and its code): the generated branch starts from
  the input's DDIM-inverted noise (recorded at the reference branch's step 0), so one variant does
  not depend on the seed. Variant i > 0 starts from sqrt(1 - VARIATION²) · inverted + VARIATION ·
  noise_i (its seeded noise, or the given latents): the inverted start stays dominant (VARIATION
  0.3: a correlation of 0.95 with it). "noise": from the seeded noise, as for variants (more variety,
  less structure).
- `restyle_strength` moves both injection windows (pnp.windows: 0.8 / 0.5 of the steps at 0.5).
- mask_mode "keep-structure": the features are injected only inside the mask; outside, the prompt
  generates freely.
- mask_mode "edit-inside": the features are injected everywhere, but only the masked part changes:
  after each step the generated latents outside the mask are replaced by the reference branch's at
  that step (m * generated + (1 - m) * reference, m area-averaged to the latents), and at the end
  the input's pixels are kept outside the mask, feathered across its border (FEATHER).

Tiling: the UNet and decoder wrap around as for variants, the mask is area-averaged and feathered
with wrap-around too, so a restyled texture is periodic; in edit-inside mode the pixels outside the
mask are the input's, so the result tiles exactly when the input does (e.g. an earlier variant).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch
from PIL import Image

from backend import masks, sam
from backend.diffusion.controls import inpaint, pnp
from backend.diffusion.controls.base import GENERATED, INVERSION, REFERENCE, Control, Run, layer_processors
from backend.diffusion.controls.inpaint import FEATHER, feather  # noqa: F401 - the edit-inside blend, shared
from backend.errors import InputError

KEEP_STRUCTURE, EDIT_INSIDE = "keep-structure", "edit-inside"
INVERTED, NOISE = "inverted", "noise"
VARIATION = 0.3  # inverted start, variants after the first: the weight of their seeded noise


@dataclasses.dataclass(frozen=True, eq=False)
class MaskSource:
    """Where the mask comes from: an image (read when the request is built) or SAM prompts."""

    image: Image.Image | None = None
    points: tuple | None = None
    box: tuple | None = None
    sam_folder: object = None

    @classmethod
    def from_options(cls, options) -> MaskSource | None:
        if options.mask is not None:
            if options.mask_points is not None or options.mask_box is not None:
                raise InputError("give a mask image or mask points/box, not both",
                                 hint="a painted mask, or points (and a box) for Segment Anything to select")
            return cls(image=masks.read_mask(options.mask))
        if options.mask_points is None and options.mask_box is None:
            return None
        return cls(points=options.mask_points, box=options.mask_box, sam_folder=sam.resolve_sam(options.sam))

    def fit(self, reference, size: int, device: str) -> np.ndarray:
        """The mask over the output, (height, width) in [0, 1]; `size` is (width, height)."""
        image = self.image
        if image is None:
            masks.check_prompts(self.points, self.box, reference.size)
            image = sam.segment(reference.rgb, self.points, self.box, self.sam_folder, device)
        fitted = masks.fit_mask(image, reference.size, size)
        masks.require_selection(fitted, sam=self.image is None)
        return fitted


START_KEY = (pnp.TAG, "start", 0, "")  # the inverted noise: the reference branch's latents at step 0


def inverted_start(inverted: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The generated branch's start from the (1, ...) inverted latents: variant 0 starts from them
    exactly, variant i > 0 from sqrt(1 - VARIATION²) · inverted + VARIATION · noise[i]."""
    inverted = inverted.to(noise.dtype)
    mixed = math.sqrt(1 - VARIATION**2) * inverted + VARIATION * noise
    return torch.cat([inverted, mixed[1:]])


@contextlib.contextmanager
def ip_adapter_off(unet):
    """IP-Adapter's image attention at scale 0 in every layer (the scales as before afterwards)."""
    saved = {name: proc.scale for name, proc in layer_processors(unet).items() if hasattr(proc, "scale")}
    for name, proc in layer_processors(unet).items():
        if name in saved:
            proc.scale = [0.0] * len(saved[name])
    try:
        yield
    finally:
        for name, proc in layer_processors(unet).items():
            if name in saved:
                proc.scale = saved[name]


class Restyle(Control):
    """Records the reference's PnP features, injects them under the restyle prompt, applies the mask."""

    def __init__(self, params, source: MaskSource | None, device: str):
        options = params.diffusion
        self.prompt, self.negative, self.strength = options.restyle_prompt, params.negative_prompt, options.restyle_strength
        self.mode, self.tile, self.source, self.device = options.mask_mode, params.tile, source, device
        self.inverted_start = options.restyle_start == INVERTED
        self.resnet_window, self.attention_window = pnp.windows(self.strength, params.steps)
        self.mask: np.ndarray | None = None  # over the output, once set up
        self.observer = None  # pnp.Observer: test instrumentation

    def setup(self, run: Run) -> None:
        super().setup(run)
        unet, size = run.pipe.unet, run.image.size
        if self.source is not None:
            self.mask = self.source.fit(run.reference, size, self.device)
        tensor = None if self.mask is None else torch.from_numpy(self.mask)[None, None].to(
            run.pipe._execution_device, unet.dtype)
        limited = pnp.MaskPyramid(tensor) if tensor is not None and self.mode == KEEP_STRUCTURE else None
        self.qk = pnp.Injection(run.state, "qk", pnp.attention_layers(unet), self.attention_window, run.recorded,
                                limited, self.observer)
        self.res = pnp.Injection(run.state, "res", frozenset({pnp.RESNET}), self.resnet_window, run.recorded,
                                 limited, self.observer)
        self.conv = pnp.resnet_conv(unet)
        self.latent_mask = None
        if tensor is not None and self.mode == EDIT_INSIDE:
            self.latent_mask = pnp.MaskPyramid(tensor).at(size[1] // 8, size[0] // 8)

    def needs_reference(self) -> bool:
        return bool(self.resnet_window or self.attention_window) or self.mode == EDIT_INSIDE or self.inverted_start

    def _latent_keys(self) -> set:
        steps = range(self.run.state.steps) if self.mode == EDIT_INSIDE else ()
        start = {START_KEY} if self.inverted_start else set()
        return {(pnp.TAG, "latents", step, "") for step in steps} | start

    def missing(self, recorded: dict) -> bool:
        return bool(self.qk.missing() or self.res.missing() or self._latent_keys() - set(recorded))

    def reference_steps(self, steps: int) -> frozenset[int]:
        if self.mode == EDIT_INSIDE:
            return frozenset(range(steps))  # the latents of every step
        return self.resnet_window | self.attention_window | ({0} if self.inverted_start else set())

    def cache_key(self) -> tuple:
        return ("pnp-source", "")  # the source reads the empty prompt, IP-Adapter off

    def conditioning(self, cond):
        pipe = self.run.pipe
        device = pipe._execution_device
        text, _ = pipe.encode_prompt(self.prompt, device, 1, False)
        empty, _ = pipe.encode_prompt("", device, 1, False)
        self.generated = dataclasses.replace(cond, text=text, image=cond.image_uncond)
        self.source_cond = dataclasses.replace(cond, text=empty, text_uncond=empty, image=cond.image_uncond)
        return cond

    def branch_conditioning(self, branch: str, cond):
        return self.generated if branch == GENERATED else self.source_cond

    def processors(self, branch: str, originals: dict) -> dict:
        return pnp.processors(branch, self.qk, originals)

    @contextlib.contextmanager
    def during(self, branch: str):
        with contextlib.ExitStack() as stack:
            if branch in (INVERSION, REFERENCE):
                stack.enter_context(ip_adapter_off(self.run.pipe.unet))
            if branch in (REFERENCE, GENERATED) and self.res.window:
                handle = self.conv.register_forward_hook(pnp.resnet_hook(self.res, branch))
                stack.callback(handle.remove)
            yield

    def before_step(self, state) -> torch.Tensor:
        if not self.inverted_start or state.step != 0:
            return state.latents
        if state.branch == REFERENCE:
            self.run.recorded[START_KEY] = state.latents.detach()
        elif state.branch == GENERATED:
            return inverted_start(self.run.recorded[START_KEY], state.latents)
        return state.latents

    def after_step(self, state) -> torch.Tensor:
        if self.mode != EDIT_INSIDE:
            return state.latents
        key = (pnp.TAG, "latents", state.step, "")
        if state.branch == REFERENCE:
            self.run.recorded[key] = state.latents.detach()
        elif state.branch == GENERATED and self.latent_mask is not None:
            return inpaint.blend_outside(state.latents, self.latent_mask, self.run.recorded[key])
        return state.latents

    def finish(self, images: list) -> list:
        if self.mask is None:
            return images
        if self.mode == EDIT_INSIDE:
            images = inpaint.keep_outside(images, self.run.image, self.mask, self.tile)
        for im in images:
            im.info["restyle_mask"] = masks.mask_image(self.mask)
        return images

    def record(self) -> dict:
        return {"restyle_start": INVERTED if self.inverted_start else NOISE,
                "pnp_resnet_steps": sorted(self.resnet_window), "pnp_attention_steps": sorted(self.attention_window),
                "pnp_attention_layers": sorted(self.qk.layers), "pnp_resnet": pnp.RESNET,
                "reference_cached": self.run.reference_cached}


def from_params(params, spec, settings):
    options = params.diffusion
    masked = options.mask is not None or options.mask_points is not None or options.mask_box is not None
    if not options.restyle_prompt:
        if masked or options.mask_mode != KEEP_STRUCTURE:
            raise InputError("a restyle mask or mask mode was given without restyle_prompt",
                             hint="pass restyle_prompt (the new look), or leave the mask options out")
        return None
    if params.appearance != "none":
        raise InputError(f"restyle sets the look from its prompt; appearance={params.appearance!r} would bring the "
                         "reference's back", hint="use appearance 'none' (the restyle command and request do)")
    if options.mask_mode == EDIT_INSIDE and not masked:
        raise InputError("mask_mode edit-inside restyles the masked part only, and no mask was given",
                         hint="give a mask image or mask points, or use keep-structure")
    return Restyle(params, MaskSource.from_options(options), spec.device)
