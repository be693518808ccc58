"""kv replacement: the generated branch borrows the reference branch's keys and values.

Two branches go through the same UNet: the *reference* branch (from the DDIM-inverted reference) and
the *generated* branch (from fresh noise). In the chosen self-attention layers and inside the step
window, the reference branch records its keys and values (attention.Record) and the generated
branch attends with them instead of its own (attention.Replace): its queries (its layout) read the
reference's features (its appearance). Everywhere else the layers' own processors run, IP-Adapter's
cross-attention included. The recorded K/V are plain tensors in the call's recordings, which the
reference cache keeps, so later variants of the same texture skip the reference branch.
"""

from __future__ import annotations

from backend.diffusion.balance import KVSettings
from backend.diffusion.controls.attention import (
    Record,
    ReferenceKV,
    Replace,
    processors_for,
    self_attention_layers,
)
from backend.diffusion.controls.base import GENERATED, REFERENCE, Control, Run


class KVReplacement(Control):
    """Records the reference K/V in the reference branch, replaces the generated branch's with them."""

    def __init__(self, settings: KVSettings, steps: int):
        self.blocks = settings.blocks
        self.window = settings.window_steps(steps)
        self.empty_window = not self.window and settings.window_fraction > 0  # asked for, rounded away
        self.fraction, self.steps = settings.window_fraction, steps

    def setup(self, run: Run) -> None:
        super().setup(run)
        layers = frozenset(self_attention_layers(run.pipe.unet, self.blocks))
        self.kv = ReferenceKV(run.state, layers, self.window, run.recorded)

    def needs_reference(self) -> bool:
        return bool(self.window)  # an empty window (balance 0) needs no reference work at all

    def reference_steps(self, steps: int) -> frozenset[int]:
        return self.window  # the reference branch only has to reach the window

    def records_in_inversion(self) -> bool:
        return True  # Record only reads the pass's own K/V at the window's steps

    def missing(self, recorded: dict) -> bool:
        return bool(self.kv.missing())

    def processors(self, branch: str, originals: dict) -> dict:
        if not self.window:
            return {}
        if branch == REFERENCE:
            return processors_for(Record, self.kv, originals)
        if branch == GENERATED:
            return self.generated_processors(originals)
        return {}

    def generated_processors(self, originals: dict) -> dict:
        return processors_for(Replace, self.kv, originals)

    def record(self) -> dict:
        return {"kv_blocks": list(self.blocks), "kv_window_steps": sorted(self.window),
                "reference_cached": self.run.reference_cached}

    def warnings(self) -> list[str]:
        if not self.empty_window:
            return []
        return [f"the kv window ({self.fraction:.3g} of {self.steps} steps) rounds to no step: this call is plain "
                "IP-Adapter, the reference's appearance is not used; raise steps or balance"]


def from_params(params, spec, settings: KVSettings):
    return KVReplacement(settings, params.steps) if params.appearance == "kv" else None
