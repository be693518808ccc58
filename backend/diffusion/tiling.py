"""Exactly tileable outputs: wrap-around padding on every padded Conv2d, per axis, undone afterwards.

With every padded convolution of the UNet and the VAE wrapping around on an axis, the network is
equivariant to shifts along it (attention and GroupNorm are global), so the image is periodic there.

One padded copy per convolution: both axes wrap in a single padded copy (the values of PyTorch's
own `padding_mode="circular"`); one axis wraps alone while the convolution zero-pads the other
itself. Padding each axis separately would copy the activation twice. The copy keeps the input's
memory format (`F.pad`'s circular mode returns a contiguous tensor and copies a channels-last one
slice by slice, and the convolution then reorders it back): on the CPU a channels-last model (the
TAESD previews) pays one plain copy, and a contiguous one a third less than with `F.pad`.
The VAE encoder's downsamplers (diffusers' Downsample2D with padding 0) pad the end of each axis by
one zero row/column themselves before an unpadded stride-2 conv: on a tiled axis that row/column is
replaced by the wrapped-around first one, so the encoder is shift-equivariant too (for shifts that
are multiples of 8 pixels).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from backend.params import AXES


def wrap_pad(x: torch.Tensor, pad_x: int, pad_y: int) -> torch.Tensor:
    """`x` (N, C, H, W) padded by wrapping around, `pad_x` columns and `pad_y` rows on each side: the
    values of `F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="circular")`, in `x`'s memory format."""
    if x.dim() == 3:  # an unbatched (C, H, W) input, as Conv2d accepts
        return wrap_pad(x[None], pad_x, pad_y)[0]
    n, c, h, w = x.shape
    if pad_x > w or pad_y > h:
        raise ValueError(f"a wrap-around pad of {pad_x}x{pad_y} needs at least that many columns and rows, not {w}x{h}")
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = torch.empty((n, c, h + 2 * pad_y, w + 2 * pad_x), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out[:, :, pad_y:pad_y + h, pad_x:pad_x + w] = x
    if pad_x:
        out[:, :, pad_y:pad_y + h, :pad_x] = x[:, :, :, w - pad_x:]
        out[:, :, pad_y:pad_y + h, pad_x + w:] = x[:, :, :, :pad_x]
    if pad_y:  # whole padded rows: the corners come with them
        out[:, :, :pad_y] = out[:, :, h:h + pad_y]
        out[:, :, pad_y + h:] = out[:, :, pad_y:2 * pad_y]
    return out


def _tiled_conv_forward(conv: nn.Conv2d, wrap_x: bool, wrap_y: bool):
    pad_y, pad_x = conv.padding  # nn.Conv2d stores (height, width)
    wrapped = (pad_x if wrap_x else 0, pad_y if wrap_y else 0)
    own = (0 if wrap_y else pad_y, 0 if wrap_x else pad_x)  # the zero padding the convolution still does

    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(wrap_pad(input, *wrapped), weight, bias, conv.stride, own, conv.dilation, conv.groups)

    return forward


def padded_convs(*modules: nn.Module) -> list[nn.Conv2d]:
    """The Conv2d layers that pad (1x1 convolutions have nothing to wrap)."""
    return [m for module in modules for m in module.modules()
            if isinstance(m, nn.Conv2d) and isinstance(m.padding, tuple) and any(m.padding)]


def _wrapped_end_forward(conv: nn.Conv2d, wrap_x: bool, wrap_y: bool):
    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([input[..., :-1], input[..., :1]], dim=-1) if wrap_x else input
        x = torch.cat([x[..., :-1, :], x[..., :1, :]], dim=-2) if wrap_y else x
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    return forward


def end_padded_convs(*modules: nn.Module) -> list[nn.Conv2d]:
    """The convs whose layer zero-pads the end of each axis by one itself (Downsample2D, padding 0)."""
    from diffusers.models.downsampling import Downsample2D

    return [m.conv for module in modules for m in module.modules()
            if isinstance(m, Downsample2D) and m.use_conv and m.padding == 0 and isinstance(m.conv, nn.Conv2d)]


@contextlib.contextmanager
def tiling(mode: str, *modules: nn.Module):
    """Within the block, the Conv2d layers of `modules` wrap around on the axes of `mode`.

    Each layer gets an instance-level `_conv_forward`; leaving the block deletes it again, so the
    shared, cached model is exactly as before, even when the block raises.
    """
    wrap_x, wrap_y = AXES[mode]
    patched = []
    try:
        if wrap_x or wrap_y:
            for convs, make in ((padded_convs(*modules), _tiled_conv_forward),
                                (end_padded_convs(*modules), _wrapped_end_forward)):
                for conv in convs:
                    if conv.padding_mode != "zeros" or "_conv_forward" in conv.__dict__:
                        continue  # a layer with its own padding scheme is left as it is
                    conv._conv_forward = make(conv, wrap_x, wrap_y)
                    patched.append(conv)
        yield patched
    finally:
        for conv in patched:
            del conv._conv_forward
