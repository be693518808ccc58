"""Outputs above the model's native size: windowed denoising on a torus and a wrap-aware tiled VAE.

MultiDiffusion (Bar-Tal et al. 2023): the latent is covered by overlapping windows of the native
size; every step the UNet predicts the noise of each window alone and the predictions are blended
into one, so one denoising step acts on the whole latent and the structure keeps the scale the
model draws at its native size. On a tiled axis the windows wrap around the torus (a window that
starts near the end continues at the beginning), so the blend is the same everywhere and the
result is as periodic as the single-pass one: it tiles, and rolling the noise by a whole number of
window strides rolls the image (when the axis is an exact multiple of the stride). Inside a window
the convolutions do not wrap on a windowed axis (the window is a crop of the torus, not a torus);
they still wrap on a tiled axis that fits in one window.

The blend weights taper linearly to a small positive value over each window's overlap with its
neighbours, so no window border leaves a step. The VAE decodes and encodes in the same way, in tiles
of the window's size whose overlaps are blended (GroupNorm and the mid-block attention then see a
tile, not the whole image: the result differs from one whole pass by a little, stated in
docs/guide/production-size.md, and the decoder's activations stay those of one tile).

Layouts are in latent cells (8 px). Torch-light: the engine supplies the functions run per window.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from backend.diffusion.tiling import AXES
from backend.errors import InputError

DEFAULT_WINDOW = 512  # px: SD1.5's native size, the window of every windowed pass
OVERLAP = 0.25  # neighbouring windows overlap by at least this fraction of a window
LATENT = 8  # px per latent cell
VAE_MARGIN = 8  # cells of context around each VAE tile, decoded and dropped (docs/guide/production-size.md)


def positions(length: int, window: int, wrap: bool) -> list[int]:
    """Window starts along one axis of `length` cells: one window when it fits; else evenly spaced,
    around the torus when `wrap` (the last window continues past the end), within the axis otherwise."""
    if length <= window:
        return [0]
    stride = window * (1 - OVERLAP)
    if wrap:
        count = math.ceil(length / stride)
        return [i * length // count for i in range(count)]
    count = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def _taper(size: int, overlap: int) -> torch.Tensor:
    """1 inside, falling linearly to 1 / (overlap + 1) at both ends over `overlap` cells."""
    if overlap <= 0:
        return torch.ones(size)
    i = torch.arange(size, dtype=torch.float32)
    return torch.clamp(torch.minimum(i + 1, size - i) / (overlap + 1), max=1.0)


@dataclass(frozen=True)
class Layout:
    """The windows over a (height, width) latent: window side `window` (cells), tiled axes `tile`."""

    height: int
    width: int
    window: int
    tile: str = "both"

    @classmethod
    def for_size(cls, size: tuple[int, int], window_px: int, tile: str) -> Layout:
        return cls(size[1] // LATENT, size[0] // LATENT, window_px // LATENT, tile)

    @property
    def windowed(self) -> tuple[bool, bool]:
        """(x, y): whether the axis is split into windows."""
        return self.width > self.window, self.height > self.window

    @property
    def active(self) -> bool:
        return any(self.windowed)

    def conv_mode(self) -> str:
        """The axes the convolutions wrap on inside a window: tiled and not split."""
        wrap_x, wrap_y = AXES[self.tile]
        split_x, split_y = self.windowed
        return {(True, True): "both", (True, False): "x", (False, True): "y"}.get(
            (wrap_x and not split_x, wrap_y and not split_y), "none")

    def _axis(self, length: int, wrap: bool) -> list[torch.Tensor]:
        side = min(length, self.window)
        return [(start + torch.arange(side)) % length for start in positions(length, self.window, wrap)]

    def tiles(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, columns) cell indices of each window, row-major (built once per layout: read only)."""
        return _tiles(self)

    def __len__(self) -> int:
        return len(self.tiles())

    def weight(self, rows: int, cols: int) -> torch.Tensor:
        """(rows, cols) blend weights of a window: tapered on the split axes (read only)."""
        return _weight(self, rows, cols)

    def _weight(self, rows: int, cols: int) -> torch.Tensor:
        overlap = round(self.window * OVERLAP)
        split_x, split_y = self.windowed
        wy = _taper(rows, overlap if split_y else 0)
        wx = _taper(cols, overlap if split_x else 0)
        return wy[:, None] * wx[None, :]

    def _context(self, index: torch.Tensor, length: int, margin: int, wrap: bool) -> tuple[torch.Tensor, int]:
        """A window's cells with `margin` more on each side (around the torus, or clamped to the axis),
        and where the window starts in them."""
        if margin == 0 or len(index) == length:
            return index, 0
        before = torch.arange(-margin, 0) + index[0]
        after = torch.arange(1, margin + 1) + index[-1]
        if wrap:
            return torch.cat([before % length, index, after % length]), margin
        before, after = before[before >= 0], after[after < length]
        return torch.cat([before, index, after]), len(before)

    def blend(self, x: torch.Tensor, run: Callable[[torch.Tensor, int], torch.Tensor], scale_in: int = 1,
              scale_out: int = 1, margin: int = 0) -> torch.Tensor:
        """Σ_w weight_w · run(x over window w) / Σ_w weight_w, every window placed where it came from.

        x is (batch, channels, height * scale_in, width * scale_in); run(crop, index) returns the
        window's result at `scale_out` per cell (a VAE decoder: 8; its encoder: scale_in 8, out 1).
        With `margin`, run sees that many more cells around the window (context), and only the
        window's own part of its result is kept.
        """
        out = weights = None
        wrap_x, wrap_y = AXES[self.tile]
        for index, (ys, xs) in enumerate(self.tiles()):
            (cy, top), (cx, left) = (self._context(ys, self.height, margin, wrap_y),
                                     self._context(xs, self.width, margin, wrap_x))
            crop = x.index_select(-2, _cells(cy, scale_in).to(x.device)).index_select(-1, _cells(cx, scale_in).to(x.device))
            result = run(crop, index)
            result = result[..., top * scale_out:(top + len(ys)) * scale_out, left * scale_out:(left + len(xs)) * scale_out]
            oy, ox = _cells(ys, scale_out).to(result.device), _cells(xs, scale_out).to(result.device)
            w = self.weight(len(ys), len(xs))
            w = w.repeat_interleave(scale_out, 0).repeat_interleave(scale_out, 1).to(result.device, torch.float32)
            if out is None:
                out = torch.zeros((*result.shape[:-2], self.height * scale_out, self.width * scale_out),
                                  dtype=torch.float32, device=result.device)
                weights = torch.zeros(out.shape[-2:], dtype=torch.float32, device=result.device)
            out[..., oy[:, None], ox[None, :]] += result.float() * w
            weights[oy[:, None], ox[None, :]] += w
        return (out / weights).to(x.dtype if x.is_floating_point() else torch.float32)


def window_pixels(cells: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows, columns) pixel indices of a window given by its latent cells (StepState.cells): what a
    control crops from an output-sized image (a mask, a conditioning image) for that window."""
    rows, cols = cells
    return _cells(rows, LATENT), _cells(cols, LATENT)


@functools.lru_cache(maxsize=16)
def _tiles(layout: Layout) -> list[tuple[torch.Tensor, torch.Tensor]]:
    wrap_x, wrap_y = AXES[layout.tile]
    return [(ys, xs) for ys in layout._axis(layout.height, wrap_y) for xs in layout._axis(layout.width, wrap_x)]


@functools.lru_cache(maxsize=16)
def _weight(layout: Layout, rows: int, cols: int) -> torch.Tensor:
    return layout._weight(rows, cols)


def _cells(index: torch.Tensor, scale: int) -> torch.Tensor:
    """Cell indices at `scale` elements per cell."""
    if scale == 1:
        return index
    return (index[:, None] * scale + torch.arange(scale)[None, :]).reshape(-1)


def decode_tiled(vae, latents: torch.Tensor, layout: Layout) -> torch.Tensor:
    """vae.decode of (scaled-back) latents, window by window: (batch, 3, H, W) in [-1, 1]."""
    return layout.blend(latents, lambda crop, _: vae.decode(crop).sample, scale_out=LATENT, margin=VAE_MARGIN)


def encode_tiled(vae, pixels: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The posterior means of (batch, 3, H, W) pixels in [-1, 1], tile by tile (unscaled latents)."""
    return layout.blend(pixels, lambda crop, _: vae.encode(crop).latent_dist.mean, scale_in=LATENT, margin=VAE_MARGIN)


def windowed_controls(params, active=()) -> None:
    """Above the window size attention distillation is refused (it optimises the whole latent against
    the whole reference's attention: see docs/guide/production-size.md); kv, IP-Adapter, InstantStyle,
    restyle, masks and sketch guidance work per window, sketch guidance only in steps where no kv or
    restyle recording is read (its own UNet pass comes after the step, when the window's recordings
    are gone)."""
    from backend.diffusion.controls.kv import KVReplacement
    from backend.diffusion.controls.restyle import Restyle
    from backend.diffusion.controls.sketch import LGPGuidance

    upscale = "make it at the window size and upscale it (python -m backend upscale)"
    if params.appearance == "ad":
        raise InputError(f"appearance ad works up to the window size ({params.diffusion.window} px a side); "
                         f"{params.width}x{params.height} is denoised in windows",
                         hint=f"{upscale}, or use appearance kv / none")
    guided = frozenset().union(*(c.window for c in active if isinstance(c, LGPGuidance)))
    read = frozenset().union(*(c.reference_steps(params.steps) for c in active
                               if isinstance(c, KVReplacement | Restyle) and c.needs_reference()))
    if guided & read:
        raise InputError(f"above the window size ({params.diffusion.window} px a side) sketch guidance cannot run in "
                         f"the steps where the reference's recordings are read (steps {sorted(guided & read)})",
                         hint=f"lower sketch_window or balance so that they do not meet, or {upscale}")


def prompt_image(image: Image.Image, layout: Layout) -> Image.Image:
    """The IP-Adapter's image prompt: the reference, or, when windowed, its centre window (each window
    sees the texture at its own pixel scale, and so does the prompt)."""
    if not layout.active:
        return image
    w, h = min(image.width, layout.window * 8), min(image.height, layout.window * 8)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))
