"""Appearance-preserving kv replacement, as diffusers attention processors.

Two branches go through the same UNet: the *reference* branch (from the DDIM-inverted reference) and
the *generated* branch (from fresh noise). In the chosen self-attention layers and inside the step
window, the reference branch *records* its keys and values and the generated branch *replaces* its
own with them: its queries (its layout) read the reference's features (its appearance).
Everywhere else the layer's original processor runs untouched, and IP-Adapter's cross-attention
processors stay installed in both branches.

The recorded K/V are plain tensors in `KVController.store`, so a cache can keep them and later
variants of the same texture can skip the reference branch entirely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from backend.errors import InputError

# The recipe: self-attention of the last two up-blocks of the SD1.5 UNet.
DEFAULT_BLOCKS = ("up_blocks.2", "up_blocks.3")
REFERENCE, GENERATED = "reference", "generated"
# Attention distillation (backend/diffusion/attention_distillation.py): the generated latent's pass whose
# self-attention output is compared with what it would be with the reference's K/V.
DISTILL = "distill"

# observer(layer, step, branch, action, hidden_states, key, value): test/benchmark instrumentation.
Observer = Callable[[str, int, str, str, torch.Tensor, torch.Tensor, torch.Tensor], None]


def self_attention_layers(unet, blocks: Iterable[str] = DEFAULT_BLOCKS) -> tuple[str, ...]:
    """Names (without `.processor`) of the self-attention (attn1) layers inside `blocks`."""
    blocks = tuple(blocks)
    names = tuple(name.removesuffix(".processor") for name in unet.attn_processors
                  if name.endswith("attn1.processor") and name.startswith(tuple(b + "." for b in blocks)))
    if not names and blocks:
        raise InputError(f"no self-attention layers in UNet blocks {list(blocks)}",
                         hint="name blocks like up_blocks.2 (SD1.5 has attention in up_blocks.1-3)")
    return names


@dataclass
class KVController:
    """Shared state of all kv processors: which branch and step is running, and the recorded K/V."""

    layers: frozenset[str]  # self-attention layers that take part
    window: frozenset[int]  # denoising step indices (0 = first) in which K/V are replaced
    store: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    branch: str | None = None
    step: int | None = None
    observer: Observer | None = None
    losses: list[torch.Tensor] = field(default_factory=list)  # DISTILL passes: one L1 term per layer

    def action(self, layer: str) -> str | None:
        """"record", "replace", "distill" or None (run the original processor) for `layer` right now.

        Any other branch value (None: the generated branch of AD mode) runs the original processor.
        """
        if layer not in self.layers or self.step not in self.window:
            return None
        if self.branch == REFERENCE:
            return "record"
        if self.branch in (GENERATED, DISTILL):
            if (self.step, layer) not in self.store:
                raise RuntimeError(f"no reference K/V for {layer} at step {self.step}: run the reference branch first")
            return "replace" if self.branch == GENERATED else "distill"
        return None

    def missing(self) -> set[tuple[int, str]]:
        """(step, layer) pairs the generated branch needs that the store lacks."""
        return {(s, name) for s in self.window for name in self.layers} - set(self.store)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.store.values())


class DistillationPassDone(Exception):
    """Raised by the last distilled layer: the UNet pass can stop there (saves time and memory)."""


class KVReplacementProcessor:
    """Self-attention that records (reference branch) or swaps in (generated branch) keys and values,
    or, in AD mode's loss pass (DISTILL), keeps its own and adds the layer's distillation loss.

    The computation follows diffusers' AttnProcessor2_0; when the controller says nothing is to be
    done it calls the layer's original processor, so outside the window the layer is unchanged.
    """

    def __init__(self, layer: str, controller: KVController, original):
        self.layer = layer
        self.controller = controller
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        ctl = self.controller
        action = ctl.action(self.layer)
        if action is None or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        if action in ("record", "distill"):
            key = attn.to_k(hidden_states).view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            value = attn.to_v(hidden_states).view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if action == "record":
                ctl.store[(ctl.step, self.layer)] = (key.detach(), value.detach())
        else:
            # The reference branch ran with batch 1; every generated image (and both halves of
            # classifier-free guidance) reads the same reference K/V, broadcast without a copy.
            ref_key, ref_value = ctl.store[(ctl.step, self.layer)]
            key = ref_key.to(query.dtype).expand(batch, -1, -1, -1)
            value = ref_value.to(query.dtype).expand(batch, -1, -1, -1)
        if ctl.observer is not None:
            ctl.observer(self.layer, ctl.step, ctl.branch, action, hidden_states, key, value)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False)
        if action == "distill":
            # The AD target: the generated queries reading the reference's K/V, held fixed (no
            # gradient), compared with the layer's own attention output under an L1 loss.
            ref_key, ref_value = ctl.store[(ctl.step, self.layer)]
            with torch.no_grad():
                target = F.scaled_dot_product_attention(
                    query.detach(), ref_key.to(query.dtype).expand(batch, -1, -1, -1),
                    ref_value.to(query.dtype).expand(batch, -1, -1, -1), attn_mask=attention_mask)
            ctl.losses.append(F.l1_loss(hidden_states, target))
            if len(ctl.losses) == len(ctl.layers):
                raise DistillationPassDone  # the rest of the UNet does not feed the loss
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def kv_replacement(unet, controller: KVController):
    """Install kv processors on the controller's layers (others keep theirs), restore on exit."""
    original = dict(unet.attn_processors)
    unknown = set(controller.layers) - {name.removesuffix(".processor") for name in original}
    if unknown:
        raise InputError(f"unknown attention layers {sorted(unknown)}", hint="see self_attention_layers()")
    installed = {
        name: KVReplacementProcessor(name.removesuffix(".processor"), controller, proc)
        if name.removesuffix(".processor") in controller.layers else proc
        for name, proc in original.items()
    }
    unet.set_attn_processor(installed)
    try:
        yield installed
    finally:
        unet.set_attn_processor(original)
        controller.branch = controller.step = None
