"""The control contract: how a control plugs into the diffusion loop (docs/DESIGN.md, "Adding a control").

A control is an object with the hooks of `Control` (each one does nothing by default). For every
call the engine builds the active controls from the parameters (controls/__init__.py: FACTORIES),
then:

1. `setup(run)` once, under the engine's lock and torch.no_grad(): load what it needs, set model
   state that is reset every call (e.g. IP-Adapter scales); `run` is the call's shared context;
2. `conditioning(cond)` may change the text / image-prompt embeddings;
3. the reference work, done only when a control's `needs_reference()` says so: the reference is
   DDIM-inverted up to the noise level of the first step any such control lists in
   `reference_steps(steps)` (default: all steps) and the REFERENCE branch denoises it from that step
   on, while controls record what they need into `run.recorded` (cached per texture and start step);
   `cache_key()` adds what the recording depends on to the cache key, `missing(run.recorded)` says
   whether the cached recording lacks something; `records_in_inversion()` says whether the
   control can take its recordings in the inversion's own passes instead (reference_passes="inversion":
   it records from processors only, at the denoising step whose timestep the pass runs at);
4. for each branch (INVERSION, REFERENCE, GENERATED) `processors(branch, originals)` returns attention
   processors by layer name (without ".processor"), installed for that branch only, the originals
   put back afterwards (IP-Adapter's stay wherever a control installs nothing); `during(branch)` is a
   context manager entered for the whole branch (e.g. forward hooks on modules, removed on exit);
   `branch_conditioning(branch, cond)` may give a branch its own embeddings (restyle's generated
   branch reads its own prompt);
5. per denoising step of every branch (`state.branch` says which): `before_step(state)` /
   `after_step(state)` return the latents (the step's input / its result, both in `state.latents`);
   per UNet pass (inversion included) `unet_kwargs(state)` adds keyword arguments to the UNet
   call (`added_cond_kwargs` entries are merged; e.g. ControlNet residuals);
6. `tiled_modules()` names the control's own networks (e.g. a ControlNet) whose convolutions wrap
   around with the UNet's while the call tiles;
7. `extra_passes(steps)` counts the UNet passes the control runs itself (progress), `record()` adds
   its settings to each image's parameters record, `warnings()` says what the user should know (the
   engine logs each and lists them under "warnings" in the parameters record);
8. `finish(images)` gets the decoded images (PIL, one per variant) and returns them (e.g. composited
   with the reference's pixels; a control may attach companion images in `image.info`).

`state` (StepState) is one object per call that the loop updates in place; processors read it too.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field

import torch

from backend.errors import InputError

INVERSION, REFERENCE, GENERATED = "inversion", "reference", "generated"


@dataclass
class StepState:
    """What the loop is doing right now."""

    steps: int = 0
    branch: str | None = None  # INVERSION, REFERENCE, GENERATED, or a control's own pass (e.g. "distill")
    step: int | None = None  # 0 = the first (noisiest) denoising step
    timestep: torch.Tensor | None = None
    latents: torch.Tensor | None = None  # the branch's latents (batch of variants, no CFG doubling)
    model_input: torch.Tensor | None = None  # the UNet's input batch (CFG: unconditional half first)
    text_embeds: torch.Tensor | None = None  # the UNet's encoder_hidden_states for that batch
    window: int | None = None  # the window being predicted when the latent is split (diffusion/windows.py)
    windows: int = 1  # how many windows a step has
    cells: tuple | None = None  # the window's (rows, columns) latent cell indices, with `window`


@dataclass
class Run:
    """The call's shared context: the pipeline, the loop's state, progress, conditioning, recordings."""

    pipe: object
    state: StepState
    progress: object = None  # set before the first UNet pass: .check() and .advance()
    cond: object = None  # the Conditioning, once encoded
    recorded: dict = field(default_factory=dict)  # what controls record in the REFERENCE branch
    reference_cached: bool = False  # the reference work came from the cache
    reference: object = None  # the input as read (backend.images.Reference: full size, any aspect)
    image: object = None  # the reference as the loop reads it (PIL RGB, square, the output size)
    scheduler: object = None  # the denoising (DDIM) scheduler, set before the first pass
    layout: object = None  # the windows (diffusion/windows.Layout) when the latent is split into them, else None


class Control:
    """A control that does nothing; subclasses override the hooks they need."""

    def setup(self, run: Run) -> None:
        self.run = run

    def needs_reference(self) -> bool:
        return False

    def reference_steps(self, steps: int) -> frozenset[int]:
        """The denoising steps whose reference-branch state the control reads (only asked when
        `needs_reference()`); the reference branch runs from the first of them."""
        return frozenset(range(steps))

    def records_in_inversion(self) -> bool:
        """Whether the control's REFERENCE recordings can be taken in the inversion's passes (its
        processors only record; no step hook or latent of the reference branch is needed)."""
        return False

    def cache_key(self) -> tuple:
        return ()

    def missing(self, recorded: dict) -> bool:
        return False

    def conditioning(self, cond):
        return cond

    def processors(self, branch: str, originals: dict) -> dict:
        return {}

    def during(self, branch: str):
        return contextlib.nullcontext()

    def branch_conditioning(self, branch: str, cond):
        return cond

    def extra_passes(self, steps: int) -> int:
        return 0

    def tiled_modules(self) -> tuple:
        return ()

    def unet_kwargs(self, state: StepState) -> dict:
        return {}

    def before_step(self, state: StepState) -> torch.Tensor:
        return state.latents

    def after_step(self, state: StepState) -> torch.Tensor:
        return state.latents

    def record(self) -> dict:
        return {}

    def finish(self, images: list) -> list:
        return images

    def warnings(self) -> list[str]:
        return []


_attention_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attention_modules(unet) -> dict:
    """The UNet's attention modules by layer name, found once per UNet: diffusers' `attn_processors`
    and `set_attn_processor` walk every module on each call (about 40 ms for SD1.5's tree on a CPU),
    which the windowed path would pay twice per window (diffusion/streamed.py)."""
    modules = _attention_modules.get(unet)
    if modules is None:
        modules = {name: module for name, module in unet.named_modules() if hasattr(module, "get_processor")}
        _attention_modules[unet] = modules
    return modules


def layer_processors(unet) -> dict:
    """The UNet's attention processors by layer name (without the ".processor" suffix)."""
    return {name: module.get_processor() for name, module in attention_modules(unet).items()}


@contextlib.contextmanager
def installed(unet, processors: dict):
    """Inside the block the layers named in `processors` use those processors; every layer gets its
    own back on exit, also when the block raises."""
    modules = attention_modules(unet)
    unknown = set(processors) - set(modules)
    if unknown:
        raise InputError(f"unknown attention layers {sorted(unknown)}", hint="see self_attention_layers()")
    original = {name: modules[name].get_processor() for name in processors}
    for name, processor in processors.items():
        modules[name].set_processor(processor)
    try:
        yield
    finally:
        for name, processor in original.items():
            modules[name].set_processor(processor)
