"""Keep the outside: only the masked part of the reference is generated anew (edit-inside).

The reference branch reconstructs the reference; after every denoising step the generated latents
outside the mask are replaced by the reference branch's at that step (m * generated + (1 - m) *
reference, m area-averaged to the latents), so the inside is denoised in the context of exactly what
surrounds it; at the end the reference's pixels are kept outside the mask, feathered across its
border (FEATHER of the shorter side). Pixels where the feathered mask is 0 are the
reference's, exactly. Restyle's edit-inside mode uses the same two steps (`blend_outside`,
`keep_outside`); this control is them alone, for callers that build it themselves (tile sets:
backend/tileset/diffusion.py) and pass it to the engine's `generate(..., controls=...)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from backend.diffusion.controls.base import GENERATED, REFERENCE, Control, Run
from backend.diffusion.tiling import AXES

TAG = "keep-outside"
FEATHER = 1 / 64  # the pixel blend reaches this fraction of the output size across the border


def feather(mask: torch.Tensor, tile: str) -> torch.Tensor:
    """The (1, 1, H, W) mask blurred by a Gaussian of sigma S * FEATHER / 3, truncated at S * FEATHER px
    (beyond that, exactly 0), S the shorter side; it wraps around on the tiled axes, elsewhere the
    border is repeated."""
    size = min(mask.shape[-2:])
    radius = max(1, math.ceil(size * FEATHER))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / (radius / 3)) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    wrap_x, wrap_y = AXES[tile]
    out = F.pad(mask, (radius, radius, 0, 0), mode="circular" if wrap_x else "replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="circular" if wrap_y else "replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1)).clamp(0, 1)


def blend_outside(latents: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The generated latents inside the (latent-sized) mask, the reference branch's outside."""
    m = mask.to(latents.dtype)
    return m * latents + (1 - m) * reference.to(latents.dtype)


def keep_outside(images: list, original: Image.Image, mask: np.ndarray, tile: str) -> list:
    """Each image inside the mask, the original's pixels outside, feathered across the border."""
    weight = feather(torch.from_numpy(mask)[None, None].double(), tile)[0, 0, :, :, None].numpy()
    base = np.asarray(original.convert("RGB"), dtype=np.float64)
    return [Image.fromarray(np.round(weight * np.asarray(im.convert("RGB"), dtype=np.float64) + (1 - weight) * base)
                            .astype(np.uint8), "RGB") for im in images]


class KeepOutside(Control):
    """Generate inside `mask` ((H, W) in [0, 1] over the output; 1 = generated), keep the rest."""

    def __init__(self, mask: np.ndarray, tile: str = "none"):
        self.mask, self.tile = np.asarray(mask, dtype=np.float32), tile

    def setup(self, run: Run) -> None:
        super().setup(run)
        from backend.diffusion.controls.pnp import MaskPyramid

        width, height = run.image.size
        if self.mask.shape != (height, width):
            raise ValueError(f"the mask is {self.mask.shape[1]}x{self.mask.shape[0]}, the output {width}x{height}")
        unet = run.pipe.unet
        tensor = torch.from_numpy(self.mask)[None, None].to(run.pipe._execution_device, unet.dtype)
        self.latent_mask = MaskPyramid(tensor).at(height // 8, width // 8)

    def needs_reference(self) -> bool:
        return True

    def cache_key(self) -> tuple:
        return (TAG,)

    def _keys(self) -> set:
        return {(TAG, "latents", step) for step in range(self.run.state.steps)}

    def missing(self, recorded: dict) -> bool:
        return bool(self._keys() - set(recorded))

    def after_step(self, state) -> torch.Tensor:
        key = (TAG, "latents", state.step)
        if state.branch == REFERENCE:
            self.run.recorded[key] = state.latents.detach()
        elif state.branch == GENERATED:
            return blend_outside(state.latents, self.latent_mask, self.run.recorded[key])
        return state.latents

    def finish(self, images: list) -> list:
        return keep_outside(images, self.run.image, self.mask, self.tile)

    def record(self) -> dict:
        return {"kept_outside": round(float(1.0 - self.mask.mean()), 4)}
