"""Sketch guidance with the Latent Guidance Predictor (sketch_mode "lgp"; Voynov et al. 2022).

At each denoising step of the guided window (the first `sketch_window` of the steps, where the
layout is decided) the latent the step produced takes one gradient step on

    L(z_t) = mean over pixels of || LGP(features(z_t), t) - E(sketch) ||^2      (per variant)

where E is the VAE encoder (the sketch as white lines on black, see backend/sketches.py), z_t the
step's input and the features the UNet's block activations at z_t (backend/diffusion/lgp.py). As in
the paper, the step's result z̃ moves to z̃ - a * grad L with a = strength * ||z̃ - z_t|| / ||grad L||:
the size of the denoising step actually taken, with classifier-free guidance and every other
control, so strength 1 moves the latent as far as one denoising step does, whatever the guidance
scale, schedule or step count. z_t is the UNet input of the step (`state.model_input`, its
conditional half). A zero gradient (the prediction already equals the target) moves nothing. The
loss, the gradient and the step are computed in float32 whatever the UNet's dtype.

The pass reads the unconditional half's features (empty prompt, no image prompt: how the published
LGP was trained) through the installed processors, so kv replacement stays on inside it. Cost: one
UNet forward and one backward through it (the UNet's weights frozen) per guided step, counted as an
extra pass in progress.

Tiling: the sketch is encoded with the VAE encoder wrapping around on the tiled axes, the features
are resized with wrap-around, the LGP is per-pixel and the step size uses global norms, so rolling
the noise and the sketch together rolls the result: tiled outputs stay exactly periodic.
"""

from __future__ import annotations

import torch

from backend.diffusion import lgp as lgp_module
from backend.diffusion import sketch_models
from backend.diffusion.controls.base import GENERATED, Control, Run, StepState
from backend.diffusion.controls.distill import frozen
from backend.diffusion.tiling import tiling
from backend.errors import InputError
from backend.sketches import load_sketch


def encode_sketch(pipe, sketch, size: int, tile: str, layout=None) -> torch.Tensor:
    """(1, 4, size/8, size/8) float32: the VAE latents of the sketch, wrapped on the tiled axes (tile by
    tile in `layout`'s windows, which wrap instead, when it splits the latent)."""
    from backend.diffusion.vae import encode_reference

    with tiling(tile if layout is None else layout.conv_mode(), pipe.vae.encoder):
        return encode_reference(pipe, sketch.convert("RGB"), size, layout).float()


def guided_window(fraction: float, steps: int) -> frozenset[int]:
    """The guided steps: the first round(fraction * steps) of 0..steps-1."""
    return frozenset(range(round(fraction * steps)))


def step_scale(strength: float, taken: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per variant: strength * ||taken|| / ||grad|| (0 where the gradient is 0)."""
    along, size = taken.flatten(1).norm(dim=1), grad.flatten(1).norm(dim=1)
    return torch.where(size > 0, strength * along / size.clamp_min(torch.finfo(size.dtype).tiny), 0.0)


class LGPGuidance(Control):
    """Steers the generated latent towards the sketch in the first steps, by the LGP's gradient."""

    def __init__(self, params, spec):
        options = params.diffusion
        self.sketch_path, self.size, self.tile = params.sketch, params.size, params.tile
        self.sketch = load_sketch(params.sketch, params.size)
        self.strength = float(params.sketch_strength)
        self.window = guided_window(options.sketch_window, params.steps) if self.strength > 0 else frozenset()
        self.path = sketch_models.resolve_lgp(options.lgp, allow_pickle=options.allow_pickle)
        self.device = spec.device
        self.observer = None  # observer(taken, grad, scale) per guided step: test instrumentation

    def setup(self, run: Run) -> None:
        super().setup(run)
        self.lgp = sketch_models.load_lgp(self.path, self.device)
        expected = lgp_module.input_width(run.pipe.unet, self.lgp.encodings)
        if self.lgp.width != expected:
            raise InputError(f"the LGP {self.path} takes {self.lgp.width} input channels; this base model's UNet "
                             f"gives {expected}", hint="use an LGP trained for this base model "
                             "(python -m backend train-lgp --base ...)")
        self.target = encode_sketch(run.pipe, self.sketch, self.size, self.tile, run.layout)

    def extra_passes(self, steps: int) -> int:
        return len(self.window)

    def before_step(self, state: StepState) -> torch.Tensor:
        self.step_input = state.latents  # above the window size the UNet's last input is one window's
        return state.latents

    def after_step(self, state: StepState) -> torch.Tensor:
        if state.branch != GENERATED or state.step not in self.window:
            return state.latents
        self.run.progress.check()
        # the step's input (CFG: the conditional half of the UNet's input)
        start = state.model_input[-state.latents.shape[0]:] if self.run.layout is None else self.step_input
        latents = self.guide(start, state.timestep, state.latents)
        self.run.progress.advance()
        return latents

    def predict(self, latents: torch.Tensor, t, tile: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge-latent prediction, the pass's noise estimate) at z_t (differentiable in `latents`)."""
        unet, cond, n = self.run.pipe.unet, self.run.cond, latents.shape[0]
        text, image = torch.cat([cond.text_uncond] * n), torch.cat([cond.image_uncond] * n)
        return lgp_module.predict(self.lgp, unet, self.run.scheduler, latents.to(unet.dtype), t, text, [image],
                                  self.tile if tile is None else tile)

    def losses(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Per-variant mean squared distance of a prediction to the sketch's encoding (or `target`)."""
        return ((pred.float() - (self.target if target is None else target)) ** 2).mean(dim=(1, 2, 3))

    def loss(self, latents: torch.Tensor, t) -> torch.Tensor:
        """The per-variant loss at z_t (no gradient): what the guidance lowers (tests, measurements)."""
        with torch.no_grad():
            return self.losses(self.predict(latents, t)[0])

    def gradient(self, start: torch.Tensor, t) -> torch.Tensor:
        """The loss's gradient at `start`; when the latent is split into windows, each window's loss is
        differentiated on its own (one UNet pass and backward of the window's size) against the sketch's
        same window, and the gradients are blended like the windows' noise predictions."""
        layout = self.run.layout
        if layout is None:
            return self._gradient(start, t, self.target, self.tile)
        both = torch.cat([start.float(), self.target.expand(start.shape[0], -1, -1, -1)], dim=1)
        channels = start.shape[1]
        return layout.blend(both, lambda crop, _: self._gradient(crop[:, :channels], t, crop[:, channels:],
                                                                  layout.conv_mode()))

    def _gradient(self, start: torch.Tensor, t, target: torch.Tensor, tile: str) -> torch.Tensor:
        work = start.detach().float().requires_grad_(True)
        with torch.enable_grad(), frozen(self.run.pipe.unet):
            pred, _ = self.predict(work, t, tile)
            (grad,) = torch.autograd.grad(self.losses(pred, target).sum(), work)
        return grad

    def guide(self, start: torch.Tensor, t, stepped: torch.Tensor) -> torch.Tensor:
        """The step's result `stepped` after one guidance step, its gradient taken at the step's input
        `start` (see the module docstring); float32 throughout, returned in `stepped`'s dtype."""
        grad = self.gradient(start, t)
        taken = stepped.float() - start.float()
        scale = step_scale(self.strength, taken, grad)
        if self.observer is not None:
            self.observer(taken, grad, scale)
        return (stepped.float() - scale.view(-1, 1, 1, 1) * grad).to(stepped.dtype)

    def record(self) -> dict:
        return {"sketch_window_steps": sorted(self.window), "lgp": str(self.path)}


def from_params(params, spec, settings):
    if not params.sketch or params.sketch_mode != "lgp":
        return None
    return LGPGuidance(params, spec)
