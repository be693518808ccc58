"""Plug-and-Play diffusion features (Tumanyan et al., CVPR 2023): the reference branch's spatial
features and self-attention queries/keys injected into the generated branch.

What is injected, and when (the defaults of the authors' diffusers port, pnp-diffusers):
- the residual feature of `up_blocks.1.resnets.1`: the output of its second convolution, before the
  skip connection is added (where the authors replace it), in the first 80 % of the steps;
- self-attention Q and K (not V) of `up_blocks.1.attentions.1-2`, `up_blocks.2.attentions.0-2` and
  `up_blocks.3.attentions.0-2` in the first 50 %: the generated branch's own values are read with
  the reference's attention map, so its layout follows the reference while its content is its own.
Layers are chosen by name; a UNet whose up-blocks have fewer attentions (SD1.5 and the tiny test
UNet both have three per up-block, layers_per_block=2) uses those of the list it has.

The reference branch (denoising the DDIM-inverted reference, see engine.py) records the features
into the call's recordings, which the reference cache keeps; the generated branch reads them. With a
mask, each injected feature is `m * reference + (1 - m) * own`, m the mask area-averaged to the
feature's resolution (so a mask on whole cells of the grid is exactly 0 or 1 there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.diffusion.controls.attention import Projection, ReferenceAttention, self_attention_layers
from backend.diffusion.controls.base import GENERATED, REFERENCE, StepState
from backend.diffusion.windows import window_pixels
from backend.errors import InputError

RESNET = "up_blocks.1.resnets.1"
ATTENTIONS = ("up_blocks.1.attentions.1", "up_blocks.1.attentions.2", "up_blocks.2.attentions.0",
              "up_blocks.2.attentions.1", "up_blocks.2.attentions.2", "up_blocks.3.attentions.0",
              "up_blocks.3.attentions.1", "up_blocks.3.attentions.2")
RESNET_FRACTION, ATTENTION_FRACTION = 0.8, 0.5  # at the default strength 0.5
TAG = "pnp"  # the first element of every recording key (run.recorded is shared by the controls)

# observer(layer, step, branch, action, own, used): the layer's own tensors and those it went on with
Observer = Callable[[str, int, str, str, tuple, tuple], None]


def windows(strength: float, steps: int) -> tuple[frozenset[int], frozenset[int]]:
    """(resnet steps, attention steps): the first int(f * steps) steps (rounded down, as the reference
    code's `int(n_timesteps * pnp_f_t)`), with the fractions f_resnet = min(1, 1.6 (1 - strength)) and
    f_attention = 1 - strength (0.8 / 0.5 at strength 0.5; strength 0 injects everywhere, strength 1
    nowhere). The 1e-9 keeps a product that lands just below an integer (0.3 * 10) on it."""
    def first(fraction):
        return frozenset(range(math.floor(min(1.0, fraction) * steps + 1e-9)))

    return first(RESNET_FRACTION / 0.5 * (1 - strength)), first(ATTENTION_FRACTION / 0.5 * (1 - strength))


def attention_layers(unet) -> frozenset[str]:
    """The self-attention layers of ATTENTIONS this UNet has."""
    return frozenset(self_attention_layers(unet, ATTENTIONS))


class MaskPyramid:
    """A (1, 1, H, W) mask, area-averaged to any feature resolution (cached per shape)."""

    def __init__(self, mask: torch.Tensor):
        self.mask, self._at, self._windows = mask, {}, {}

    def window(self, index: int, cells: tuple) -> MaskPyramid:
        """The mask over window `index` of a latent split into windows ((rows, columns) latent cells:
        StepState.cells), as a pyramid of its own (cached per window)."""
        if index not in self._windows:
            rows, cols = window_pixels(cells)
            self._windows[index] = MaskPyramid(self.mask[..., rows[:, None], cols[None, :]])
        return self._windows[index]

    def at(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._at:
            self._at[(height, width)] = F.interpolate(self.mask, size=(height, width), mode="area")
        return self._at[(height, width)]

    def tokens(self, length: int) -> torch.Tensor:
        """(1, 1, length, 1): the mask over a grid of `length` tokens with the mask's aspect, row-major."""
        height, width = self.mask.shape[-2:]
        rows = round(math.sqrt(length * height / width))
        if rows == 0 or length % rows or (length // rows) * height != rows * width:
            raise ValueError(f"{length} attention tokens are not a grid of the mask's {width}x{height} aspect")
        return self.at(rows, length // rows).reshape(1, 1, length, 1)


@dataclass
class Injection:
    """One kind of injected feature ("qk" or "res"): its layers, its step window, where it is kept
    (the call's recordings) and the mask that limits it (None: everywhere)."""

    state: StepState
    kind: str
    layers: frozenset[str]
    window: frozenset[int]
    store: dict
    mask: MaskPyramid | None = None
    observer: Observer | None = None

    def active(self) -> bool:
        return self.state.step in self.window

    def key(self, layer: str, step: int | None = None, window: int | None = None) -> tuple:
        """Where a feature is kept: by step and layer, and by window when the latent is split into windows
        (each window reads the reference's same window)."""
        step = self.state.step if step is None else step
        window = self.state.window if window is None else window
        return (TAG, self.kind, step, layer) if window is None else (TAG, self.kind, step, layer, window)

    def missing(self) -> set[tuple]:
        windows = range(self.state.windows) if self.state.windows > 1 else (None,)
        return {self.key(layer, step, window) for step in self.window for layer in self.layers
                for window in windows} - set(self.store)

    def put(self, layer: str, tensors: tuple) -> None:
        self.store[self.key(layer)] = tuple(t.detach() for t in tensors)

    def reference(self, layer: str, batch: int, dtype) -> tuple:
        recorded = self.store.get(self.key(layer))
        if recorded is None:
            raise RuntimeError(f"no reference features for {layer} at step {self.state.step}: run the reference branch first")
        return tuple(t.to(dtype).expand(batch, *t.shape[1:]) for t in recorded)

    def blend(self, reference: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """The reference's feature inside the mask, the own one outside."""
        if self.mask is None:
            return reference
        mask = self.mask if self.state.window is None else self.mask.window(self.state.window, self.state.cells)
        m = mask.tokens(own.shape[2]) if self.kind == "qk" else mask.at(*own.shape[2:])
        m = m.to(own.dtype)
        return m * reference + (1 - m) * own

    def observe(self, layer: str, action: str, own: tuple, used: tuple) -> None:
        if self.observer is not None:
            self.observer(layer, self.state.step, self.state.branch, action, own, used)


class RecordQK(ReferenceAttention):
    """Own attention; keeps this step's queries and keys (reference branch)."""

    action = "record"

    def attention(self, p: Projection) -> torch.Tensor:
        key, value = p.own_kv()
        self.kv.put(self.layer, (p.query, key))
        self.kv.observe(self.layer, self.action, (p.query, key), (p.query, key))
        return p.attend(key, value)


class InjectQK(ReferenceAttention):
    """The reference's queries and keys (inside the mask) with the layer's own values."""

    action = "inject"

    def attention(self, p: Projection) -> torch.Tensor:
        key, value = p.own_kv()
        ref_query, ref_key = self.kv.reference(self.layer, p.query.shape[0], p.query.dtype)
        query, injected_key = self.kv.blend(ref_query, p.query), self.kv.blend(ref_key, key)
        self.kv.observe(self.layer, self.action, (p.query, key), (query, injected_key))
        p.query = query
        return p.attend(injected_key, value)


def resnet_hook(injection: Injection, branch: str):
    """A forward hook for the resnet's second convolution: records (reference branch) or replaces
    (generated branch) its output inside the window; elsewhere the output passes unchanged."""
    (layer,) = injection.layers

    def hook(module, args, output):
        if not injection.active():
            return None
        if branch == REFERENCE:
            injection.put(layer, (output,))
            injection.observe(layer, "record", (output,), (output,))
            return None
        (reference,) = injection.reference(layer, output.shape[0], output.dtype)
        used = injection.blend(reference, output)
        injection.observe(layer, "inject", (output,), (used,))
        return used

    return hook


def resnet_conv(unet, name: str = RESNET):
    """The convolution whose output PnP replaces: `conv2` of the resnet block `name`."""
    try:
        return unet.get_submodule(f"{name}.conv2")
    except AttributeError:
        raise InputError(f"this UNet has no {name} (Plug-and-Play injects its residual feature)",
                         hint="restyle needs an SD1.5-shaped UNet") from None


def processors(branch: str, qk: Injection, originals: dict) -> dict:
    cls = {REFERENCE: RecordQK, GENERATED: InjectQK}.get(branch)
    if cls is None or not qk.window:
        return {}
    return {layer: cls(layer, qk, originals[layer]) for layer in qk.layers}
