"""Self-attention processors that read or write the reference branch's keys and values.

One processor per behaviour, in the style of diffusers' AttnProcessor2_0 (whose computation
`Projection` reproduces): `Record` keeps the layer's own K/V (reference branch), `Replace` attends
with the recorded ones (kv replacement), and attention distillation's processor
(controls/distill.py) compares the two. Each runs only while its `ReferenceKV` says so and calls the
layer's original processor otherwise, so outside the window the layer is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from backend.diffusion.controls.base import StepState
from backend.errors import InputError

# observer(layer, step, branch, action, hidden_states, key, value): test/benchmark instrumentation.
Observer = Callable[[str, int, str, str, torch.Tensor, torch.Tensor, torch.Tensor], None]


def self_attention_layers(unet, blocks: Iterable[str]) -> tuple[str, ...]:
    """Names (without `.processor`) of the self-attention (attn1) layers inside `blocks`."""
    blocks = tuple(blocks)
    names = tuple(name.removesuffix(".processor") for name in unet.attn_processors
                  if name.endswith("attn1.processor") and name.startswith(tuple(b + "." for b in blocks)))
    if not names and blocks:
        raise InputError(f"no self-attention layers in UNet blocks {list(blocks)}",
                         hint="name blocks like up_blocks.2 (SD1.5 has attention in up_blocks.1-3)")
    return names


@dataclass
class ReferenceKV:
    """The reference K/V of some self-attention layers inside a step window: where they are kept
    (`store`, the call's recordings: (step, layer) -> (key, value), and (step, layer, window) when
    the latent is split into windows: each window reads the reference's same window) and when they
    are used."""

    state: StepState
    layers: frozenset[str]
    window: frozenset[int]  # denoising step indices (0 = first) in which the layers take part
    store: dict = field(default_factory=dict)
    observer: Observer | None = None

    def active(self) -> bool:
        return self.state.step in self.window

    def missing(self) -> set[tuple[int, str]]:
        """(step, layer) pairs the generated branch needs that the store lacks."""
        if self.state.windows > 1:
            return {(s, name, w) for s in self.window for name in self.layers
                    for w in range(self.state.windows)} - set(self.store)
        return {(s, name) for s in self.window for name in self.layers} - set(self.store)

    def key(self, layer: str) -> tuple:
        """Where this step's (and window's) K/V of `layer` are kept."""
        step, window = self.state.step, self.state.window
        return (step, layer) if window is None else (step, layer, window)

    def reference(self, layer: str, batch: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The recorded K/V of `layer` at this step, broadcast (without a copy) to `batch`: the
        reference branch ran with batch 1 and every variant (and both CFG halves) reads it."""
        recorded = self.store.get(self.key(layer))
        if recorded is None:
            raise RuntimeError(f"no reference K/V for {layer} at step {self.state.step}: run the reference branch first")
        return tuple(t.to(dtype).expand(batch, -1, -1, -1) for t in recorded)

    def observe(self, layer: str, action: str, hidden, key, value) -> None:
        if self.observer is not None:
            self.observer(layer, self.state.step, self.state.branch, action, hidden, key, value)


@dataclass
class Projection:
    """AttnProcessor2_0's computation split in two: the projections before attention (`project`),
    the output projection after it (`finish`)."""

    attn: object
    hidden: torch.Tensor  # normalised, (batch, length, channels)
    query: torch.Tensor  # (batch, heads, length, head_dim)
    mask: torch.Tensor | None
    residual: torch.Tensor
    shape: tuple  # the input's shape (4-d: batch, channel, height, width)

    @classmethod
    def project(cls, attn, hidden_states, attention_mask=None, temb=None) -> Projection:
        residual, shape = hidden_states, tuple(hidden_states.shape)
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        query = query.view(batch, -1, attn.heads, query.shape[-1] // attn.heads).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        return cls(attn, hidden_states, query, attention_mask, residual, shape)

    def own_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's own keys and values, (batch, heads, length, head_dim)."""
        attn, (batch, heads, _, head_dim) = self.attn, self.query.shape
        key = attn.to_k(self.hidden).view(batch, -1, heads, head_dim).transpose(1, 2)
        value = attn.to_v(self.hidden).view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return key, value

    def attend(self, key, value) -> torch.Tensor:
        return F.scaled_dot_product_attention(self.query, key, value, attn_mask=self.mask, dropout_p=0.0,
                                              is_causal=False)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """The layer's output from the per-head attention output."""
        attn, batch = self.attn, out.shape[0]
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(self.query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if len(self.shape) == 4:
            out = out.transpose(-1, -2).reshape(self.shape)
        if attn.residual_connection:
            out = out + self.residual
        return out / attn.rescale_output_factor


class ReferenceAttention:
    """Base of the processors: the original processor unless `kv` is active (and it is self-attention)."""

    action = ""

    def __init__(self, layer: str, kv: ReferenceKV, original):
        self.layer, self.kv, self.original = layer, kv, original

    def active(self) -> bool:
        return self.kv.active()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None or not self.active():
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        p = Projection.project(attn, hidden_states, attention_mask, temb)
        return p.finish(self.attention(p))

    def attention(self, p: Projection) -> torch.Tensor:
        raise NotImplementedError


class Record(ReferenceAttention):
    """Own attention; keeps this step's K/V in the store."""

    action = "record"

    def attention(self, p: Projection) -> torch.Tensor:
        key, value = p.own_kv()
        self.kv.store[self.kv.key(self.layer)] = (key.detach(), value.detach())
        self.kv.observe(self.layer, self.action, p.hidden, key, value)
        return p.attend(key, value)


class Replace(ReferenceAttention):
    """Own queries (the layout) attending with the reference's K/V (its appearance)."""

    action = "replace"

    def attention(self, p: Projection) -> torch.Tensor:
        key, value = self.kv.reference(self.layer, p.query.shape[0], p.query.dtype)
        self.kv.observe(self.layer, self.action, p.hidden, key, value)
        return p.attend(key, value)


def processors_for(cls, kv: ReferenceKV, originals: dict) -> dict:
    """One `cls` processor per layer of `kv`, wrapping that layer's original processor."""
    return {layer: cls(layer, kv, originals[layer]) for layer in kv.layers}
