"""The schedulers of a call: "full" (DDIM, the model's own schedule) or "fast" (a step-distillation
LoRA's schedule, backend/diffusion/fast.py).

Three schedulers share one set of timesteps, so that step i means the same noise level everywhere:
- `generated`: denoises the generated branch (the LoRA's own sampler when fast);
- `reference`: denoises the reference branch; plain DDIM, the exact reverse of the inversion, so
  that the reference branch reconstructs the reference (and keeps its recordings comparable);
- `inverse`: DDIM inversion.
Fast schedules use "trailing" timesteps (the first step at t = 999, the pure-noise level the
distilled models start from; Lin et al. 2024), full ones the model's "leading" ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

FULL, FAST = "full", "fast"
SAMPLERS = (FULL, FAST)


@dataclass
class Schedulers:
    generated: object
    reference: object
    inverse: object
    generated_kwargs: dict = field(default_factory=dict)  # extra arguments of generated.step
    name: str = "ddim"  # what the parameters record names

    def reset(self) -> None:
        """Stateful samplers (TCD counts its steps) start a new denoising pass from their first step."""
        if hasattr(self.generated, "_step_index"):
            self.generated._step_index = None


def schedulers(pipe, steps: int, scheduler: str = "ddim") -> Schedulers:
    """The call's schedulers on `pipe`'s device. `scheduler`: "ddim" (full), "ddim-trailing" or
    "tcd" (fast; TCD with gamma 0: deterministic consistency sampling, which LCM-LoRA runs with)."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, TCDScheduler

    device = pipe._execution_device
    # clip_sample off: SD latents are not confined to [-1, 1] (configs that omit it default to on).
    config = dict(pipe.scheduler.config)
    spacing = {} if scheduler == "ddim" else {"timestep_spacing": "trailing"}
    reference = DDIMScheduler.from_config(config, clip_sample=False, **spacing)
    inverse = DDIMInverseScheduler.from_config(config, clip_sample=False, **spacing)
    reference.set_timesteps(steps, device=device)
    inverse.set_timesteps(steps, device=device)
    if scheduler in ("ddim", "ddim-trailing"):
        return Schedulers(reference, reference, inverse, name=scheduler)
    if scheduler != "tcd":
        raise ValueError(f"unknown scheduler {scheduler!r}")
    generated = TCDScheduler.from_config(config, clip_sample=False)
    # The shared trailing timesteps lie within 10 of TCD's own (999, 759, 499, 259 at 4 steps), which
    # the inversion's fixed-stride DDIM cannot follow; TCD warns about every such timestep each call.
    quiet = logging.getLogger("diffusers.schedulers.scheduling_tcd")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        generated.set_timesteps(timesteps=[int(t) for t in reference.timesteps], device=device)
    finally:
        quiet.setLevel(level)
    return Schedulers(generated, reference, inverse, {"eta": 0.0}, name="tcd")
