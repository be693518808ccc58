"""The Latent Guidance Predictor (Voynov et al., "Sketch-Guided Text-to-Image Diffusion Models").

A per-pixel MLP reads the UNet's intermediate activations at a noisy latent z_t and predicts the
VAE encoding of the edge map of the image being generated. Its input at each latent pixel, in the
layout of the public SD1.5 training code (so its published weights load as they are):

    [output of every down block, then of every up block, each resized to the latent size
     (bilinear) | the noise level n (latent channels) | sin(2π n 2^-l), l = 0 .. encodings-1]

where n = sqrt(1 - alpha_bar_t) * noise is the noise part of z_t (the true noise in training, the
UNet's estimate of it at inference). For SD1.5, 2 x (320 + 640 + 1280 + 1280) + 4 x (1 + 9) = 7080
inputs; the MLP is 7080 -> 512 -> 256 -> 128 -> 64 -> 4 (ReLU, then BatchNorm, after each hidden
layer). `input_width(unet)` derives the width from the UNet's block channels, so smaller UNets get
a narrower LGP of the same shape.

Features are read from the pass the caller runs (`FeatureTap`, forward hooks on the blocks; with the
features from the unconditional half, as the published LGP was trained). The pass runs to the
UNet's output: the last hooked block is the last up block, and the noise estimate after it (three
small layers) is the noise-level input. When the call tiles, the
resize wraps around on the tiled axes, so the prediction is shift-equivariant like the UNet.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.diffusion.tiling import AXES
from backend.errors import InputError

HIDDEN = (512, 256, 128, 64)
ENCODINGS = 9


def feature_channels(unet) -> int:
    """Channels of the hooked activations: every down block's output, then every up block's."""
    channels = list(unet.config.block_out_channels)
    return 2 * sum(channels)


def input_width(unet, encodings: int = ENCODINGS) -> int:
    latent = unet.config.in_channels
    return feature_channels(unet) + latent * (1 + encodings)


class LatentGuidancePredictor(nn.Module):
    """The MLP; `layers` holds the parameters under the published checkpoint's names."""

    def __init__(self, width: int, encodings: int = ENCODINGS, out_channels: int = 4):
        super().__init__()
        self.width, self.encodings = width, encodings
        layers: list[nn.Module] = []
        previous = width
        for hidden in HIDDEN:
            layers += [nn.Linear(previous, hidden), nn.ReLU(), nn.BatchNorm1d(hidden)]
            previous = hidden
        layers.append(nn.Linear(previous, out_channels))
        self.layers = nn.Sequential(*layers)

    def init_weights(self, std: float = 0.02) -> LatentGuidancePredictor:
        """The published training's start: linear weights ~ N(0, std), biases 0."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, std)
                nn.init.zeros_(layer.bias)
        return self

    def forward(self, features: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features and (B, 4, h, w) noise level -> (B, 4, h, w) predicted edge latents."""
        encodings = [torch.sin(2 * math.pi * noise_level * 2.0**-level) for level in range(self.encodings)]
        x = torch.cat([features, noise_level, *encodings], dim=1)
        if x.shape[1] != self.width:
            raise InputError(f"the LGP takes {self.width} input channels, the UNet gives {x.shape[1]}",
                             hint="use an LGP trained for this base model (python -m backend train-lgp)")
        batch, channels, height, width = x.shape
        out = self.layers(x.permute(0, 2, 3, 1).reshape(-1, channels))
        return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


def resize(acts: torch.Tensor, size: tuple[int, int], tile: str = "none") -> torch.Tensor:
    """Bilinear resize to `size`; on tiled axes the border interpolates with the opposite side."""
    if tuple(acts.shape[-2:]) == tuple(size):
        return acts
    wrap_x, wrap_y = AXES[tile]
    pad_x, pad_y = int(wrap_x), int(wrap_y)
    if pad_x or pad_y:
        acts = F.pad(acts, (pad_x, pad_x, pad_y, pad_y), mode="circular")
    sy, sx = size[0] // (acts.shape[-2] - 2 * pad_y), size[1] // (acts.shape[-1] - 2 * pad_x)
    out = F.interpolate(acts, size=(size[0] + 2 * pad_y * sy, size[1] + 2 * pad_x * sx), mode="bilinear")
    return out[..., pad_y * sy: pad_y * sy + size[0], pad_x * sx: pad_x * sx + size[1]]


class FeatureTap(contextlib.AbstractContextManager):
    """Forward hooks on the UNet's down and up blocks; `features(size)` concatenates their outputs."""

    def __init__(self, unet, tile: str = "none"):
        self.unet, self.tile = unet, tile
        self.outputs: dict[int, torch.Tensor] = {}
        self.blocks = [*unet.down_blocks, *unet.up_blocks]

    def __enter__(self):
        self.outputs.clear()
        self.handles = [block.register_forward_hook(self._keep(i)) for i, block in enumerate(self.blocks)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False

    def _keep(self, index: int):
        def hook(module, args, output):
            self.outputs[index] = output[0] if isinstance(output, tuple) else output  # down: (hidden, skips)

        return hook

    def features(self, size: tuple[int, int]) -> torch.Tensor:
        if len(self.outputs) != len(self.blocks):
            raise RuntimeError(f"the UNet pass reached {len(self.outputs)} of {len(self.blocks)} hooked blocks")
        acts = [resize(self.outputs[i].float(), size, self.tile) for i in range(len(self.blocks))]
        return torch.cat(acts, dim=1)


def noise_level(scheduler, eps: torch.Tensor, t) -> torch.Tensor:
    """sqrt(1 - alpha_bar_t) * eps: the noise part of z_t (the LGP's noise-level input); `t` is one
    timestep or one per sample."""
    alpha_bar = scheduler.alphas_cumprod.to(eps.device)[torch.as_tensor(t, device=eps.device).long()]
    return (1 - alpha_bar).sqrt().float().reshape(-1, 1, 1, 1) * eps.float()


def features_at(unet, latents: torch.Tensor, t, text, image_embeds, tile: str = "none"):
    """(the hooked blocks' features at the latent size, the UNet's noise estimate): one UNet pass."""
    kwargs = {"encoder_hidden_states": text}
    if image_embeds is not None:
        kwargs["added_cond_kwargs"] = {"image_embeds": image_embeds}
    with FeatureTap(unet, tile) as tap:
        eps = unet(latents, t, **kwargs).sample
    return tap.features(tuple(latents.shape[-2:])), eps


def predict(lgp: LatentGuidancePredictor, unet, scheduler, latents, t, text, image_embeds, tile="none"):
    """(the LGP's edge-latent prediction, the UNet's noise estimate) at z_t = `latents`: one UNet
    pass, differentiable in `latents`; the noise level is the pass's own noise estimate."""
    features, eps = features_at(unet, latents, t, text, image_embeds, tile)
    return lgp(features, noise_level(scheduler, eps, t)), eps
