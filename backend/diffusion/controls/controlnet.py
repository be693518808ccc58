"""Sketch guidance through an SD1.5 ControlNet (sketch_mode "controlnet").

The sketch (white lines on black, backend/sketches.py) is the ControlNet's conditioning image; at
every UNet pass of the generated branch the ControlNet runs on the same input batch, timestep and
text embeddings (both classifier-free guidance halves, as diffusers' ControlNet pipeline does) and
its residuals enter the UNet through `down_block_additional_residuals` /
`mid_block_additional_residual`, scaled by `sketch_strength` (the conditioning scale). The
IP-Adapter image prompt and kv replacement are untouched: the ControlNet reads the text embeddings
only, and the reference branch and the inversion run without it. Its convolutions wrap around with
the UNet's when the call tiles (`tiled_modules`), so tiled outputs stay exactly periodic.

Default model: lllyasviel/control_v11p_sd15_lineart (scribble and softedge ControlNets of the
same family take the same white-on-black input). Cost: one ControlNet pass (about half a UNet)
per UNet pass of the generated branch.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.diffusion import sketch_models
from backend.diffusion.controls.base import GENERATED, Control, Run, StepState
from backend.diffusion.windows import window_pixels
from backend.sketches import load_sketch


class ControlNetGuide(Control):
    def __init__(self, params, spec):
        self.sketch = load_sketch(params.sketch, params.size)
        self.strength = float(params.sketch_strength)
        self.folder = sketch_models.resolve_controlnet(params.diffusion.controlnet)
        self.spec = spec

    def setup(self, run: Run) -> None:
        super().setup(run)
        self.net = sketch_models.load_controlnet(self.folder, self.spec.device, self.spec.dtype)
        gray = torch.from_numpy(np.asarray(self.sketch, dtype=np.float32) / 255.0)
        self.image = gray.expand(1, 3, *gray.shape).to(device=run.pipe._execution_device, dtype=self.net.dtype)

    def tiled_modules(self) -> tuple:
        return (self.net,)

    def unet_kwargs(self, state: StepState) -> dict:
        if state.branch != GENERATED or self.strength == 0:
            return {}
        batch, image = state.model_input.shape[0], self.image
        if state.cells is not None:  # above the window size: the sketch's part under the window
            rows, cols = window_pixels(state.cells)
            image = image[..., rows[:, None], cols[None, :]]
        down, mid = self.net(state.model_input, state.timestep, encoder_hidden_states=state.text_embeds,
                             controlnet_cond=image.expand(batch, -1, -1, -1),
                             conditioning_scale=self.strength, return_dict=False)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    def record(self) -> dict:
        return {"controlnet": str(self.folder)}


def from_params(params, spec, settings):
    if not params.sketch or params.sketch_mode != "controlnet":
        return None
    return ControlNetGuide(params, spec)
