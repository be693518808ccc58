"""The sampling loop of one diffusion call: DDIM inversion and denoising of a batch of latents as
one branch (reference, generated, inversion), with the controls' hooks around every step and their
attention processors installed for the branch; `Progress` counts every UNet pass for `on_step`.
backend/diffusion/engine.py sets a loop up for a call (conditioning, controls, windows).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image

from backend.diffusion import samplers, vae
from backend.diffusion.controls.base import (
    GENERATED,
    INVERSION,
    REFERENCE,
    StepState,
    installed,
    layer_processors,
)
from backend.errors import CancelledError

if TYPE_CHECKING:  # the engine sets loops up; imported here for the annotations only
    from backend.diffusion.engine import Conditioning
    from backend.diffusion.windows import Layout

# reference work actually done (tests, benchmarks)
counters = {"inversions": 0, "reference_branches": 0, "image_encodings": 0}


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


def _merge(kwargs: dict, extra: dict) -> None:
    """Add a control's UNet keyword arguments; `added_cond_kwargs` entries are merged."""
    for key, value in extra.items():
        if key == "added_cond_kwargs":
            kwargs[key] = {**kwargs[key], **value}
        elif key in kwargs:
            raise ValueError(f"two sources set the UNet argument {key!r}")
        else:
            kwargs[key] = value


class Loop:
    """The sampling loop of one call: DDIM inversion and denoising, calling the controls' hooks
    (backend/diffusion/controls/base.py) and counting every UNet pass in `progress`."""

    def __init__(self, pipe, cond: Conditioning, steps: int, progress: Progress, controls=(),
                 state: StepState | None = None, scheduler: str = "ddim", layout: Layout | None = None):
        self.pipe, self.cond, self.progress, self.controls = pipe, cond, progress, list(controls)
        self.state = state if state is not None else StepState(steps=steps)
        self.schedulers = samplers.schedulers(pipe, steps, scheduler)
        # forward: the generated branch's sampler; reference: DDIM, the exact reverse of the inversion
        self.forward, self.reference, self.inverse = (self.schedulers.generated, self.schedulers.reference,
                                                      self.schedulers.inverse)
        self.layout = layout if layout is not None and layout.active else None

    def eps(self, latents: torch.Tensor, t, guidance: float) -> torch.Tensor:
        """The guided noise prediction for a batch of latents: blended over the layout's windows
        (state.window: the window's index) when it splits them (backend/diffusion/windows.py)."""
        if self.layout is None:
            return self._eps(latents, t, guidance)

        def window(crop: torch.Tensor, index: int) -> torch.Tensor:
            self.state.window, self.state.cells = index, self.layout.tiles()[index]
            return self._eps(crop, t, guidance)

        try:
            return self.layout.blend(latents, window)
        finally:
            self.state.window = self.state.cells = None

    def _eps(self, latents: torch.Tensor, t, guidance: float) -> torch.Tensor:
        guided = guidance > 1.0
        text, image = self.cond.batch(latents.shape[0], guided)
        model_in = torch.cat([latents, latents]) if guided else latents
        self.state.model_input, self.state.text_embeds = model_in, text
        kwargs = {"encoder_hidden_states": text, "added_cond_kwargs": {"image_embeds": image}}
        for control in self.controls:
            _merge(kwargs, control.unet_kwargs(self.state))
        eps = self.pipe.unet(model_in, t, **kwargs).sample
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        return eps

    def invert(self, latents: torch.Tensor, iterations: int = 0, count: int | None = None, done: int = 0,
               trajectory: list | None = None, record: bool = False) -> torch.Tensor:
        """DDIM inversion (guidance 1): the noise that the reference branch denoises back to `latents`.

        Runs inversion steps `done` .. `count` - 1 (default: all) from `latents`, which are at the level
        of `done` steps (0: the clean reference); each step's result is appended to `trajectory`. After
        k steps the latents are at the level of denoising step `steps` - k.

        Plain DDIM inversion evaluates the UNet at the previous, less noisy latent; `iterations` > 0
        refines each step by fixed-point iteration so that the UNet is evaluated at the latent it
        produces, which is what the denoising step will see (ReNoise, Garibi et al. 2024). Useful when
        the noise prediction varies fast with the latent, as in the random-weight test models.

        `record`: the passes run as the REFERENCE branch at the denoising step of their timestep
        (inversion step i runs at the timestep of step steps - 1 - i), so that the controls' reference
        processors record in them (reference_passes="inversion"); the last iteration's pass is kept.
        """
        counters["inversions"] += 1
        timesteps, steps = self.inverse.timesteps[:count], len(self.inverse.timesteps)
        if record and not torch.equal(self.inverse.timesteps.flip(0).cpu(), self.reference.timesteps.cpu()):
            raise RuntimeError("the inversion's timesteps are not the denoising steps' reversed: it cannot record")
        with self.branch(REFERENCE if record else INVERSION):
            for i in range(done, len(timesteps)):
                t = timesteps[i]
                self.state.step, self.state.timestep, start = steps - 1 - i if record else i, t, latents
                for _ in range(1 + iterations):
                    self.progress.check()
                    latents = self.inverse.step(self.eps(latents, t, 1.0), t, start).prev_sample
                    self.progress.advance()
                if trajectory is not None:
                    trajectory.append(latents)
        return latents

    def denoise(self, latents: torch.Tensor, guidance: float, branch: str = GENERATED,
                previews: bool = False, start: int = 0) -> torch.Tensor:
        """Denoising of a batch as `branch` from step `start` (the latents are at its level), with the
        controls' step hooks around each step; `previews`: one preview picture per step (on_step)."""
        state = self.state
        scheduler, kwargs = (self.reference, {}) if branch == REFERENCE else (self.forward,
                                                                             self.schedulers.generated_kwargs)
        self.schedulers.reset()
        with self.branch(branch):
            for i in range(start, len(scheduler.timesteps)):
                t = scheduler.timesteps[i]
                self.progress.check()
                state.step, state.timestep, state.latents = i, t, latents
                latents = self._hook("before_step")
                eps = self.eps(latents, t, guidance)
                out = scheduler.step(eps, t, latents, **kwargs)
                self.progress.advance(self.preview(_clean(out, scheduler, latents, eps, t)) if previews else None)
                state.latents = out.prev_sample
                latents = self._hook("after_step")
        return latents

    def preview(self, predicted: torch.Tensor) -> Image.Image:
        """The step's preview: the first variant's predicted clean latent, by TAESD when one is loaded
        for this call (`self.previewer`), else by the fixed latent-to-RGB map."""
        if self.previewer is not None:
            return self.previewer(predicted[:1])[0]
        return vae.latent_preview(predicted[0])

    previewer = None  # set by the call: latents -> small PIL images (TAESD)

    def _hook(self, name: str) -> torch.Tensor:
        for control in self.controls:
            self.state.latents = getattr(control, name)(self.state)
        return self.state.latents

    @contextlib.contextmanager
    def branch(self, name: str):
        """Run as branch `name`: the controls' processors for it installed, their `during` contexts
        entered and the branch's conditioning in place; everything as before afterwards."""
        originals = layer_processors(self.pipe.unet)
        processors: dict = {}
        cond = self.cond
        for control in self.controls:
            processors |= control.processors(name, originals)
            self.cond = control.branch_conditioning(name, self.cond)
        self.state.branch = name
        try:
            with installed(self.pipe.unet, processors), contextlib.ExitStack() as stack:
                for control in self.controls:
                    stack.enter_context(control.during(name))
                yield
        finally:
            self.state.branch = self.state.step = None
            self.cond = cond


def _clean(out, scheduler, latents: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """The step's predicted clean latent: the scheduler's own where its output has one (DDIM, LCM);
    TCD's has none, so from the noise prediction: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    predicted = getattr(out, "pred_original_sample", None)
    if predicted is not None:
        return predicted
    alpha = scheduler.alphas_cumprod.to(latents.device)[int(t)].to(latents.dtype)
    return (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()
