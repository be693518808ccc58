"""What is kept of a texture between calls (its image-prompt embedding, its inversion and what the
controls recorded in its reference branch), and which reference work a call still has to do.

Encoding the reference with the CLIP image encoder, inverting it and running its branch all depend
only on the texture and the settings; asking for more variants of the same texture should pay for
none of them again. Entries are keyed by everything that changes them (pixels, size, steps, model,
tiling, conditioning) and evicted least recently used once their total size passes a byte budget
(TEXTURE_VARIANTS_CACHE_MB, default 2048).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields, is_dataclass

import torch

DEFAULT_BUDGET_MB = 2048


def nbytes(value) -> int:
    """Bytes held by the tensors in `value` (a tensor, or containers / dataclasses of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if is_dataclass(value):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value))
    return 0


@dataclass
class ReferenceWork:
    """The reference work of one texture. The inversion does not depend on where the reference branch
    starts, the recordings do: calls with different kv windows share the inversion (a longer window
    continues it) and each keeps its own recordings."""

    # trajectory[k]: the reference's latents after k + 1 DDIM inversion steps (level inverse.timesteps[k])
    trajectory: list = field(default_factory=list)
    # the reference branch's first step -> what controls recorded in that branch
    recorded: dict = field(default_factory=dict)

    def nbytes(self) -> int:
        return nbytes(self)


class ReferenceCache:
    """A least-recently-used store of tensors (or containers of them) under a byte budget."""

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("TEXTURE_VARIANTS_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple):
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple, value) -> None:
        """Store (or refresh) an entry, then evict the oldest ones beyond the budget.

        An entry larger than the whole budget is not kept at all.
        """
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while self._entries and self.nbytes_locked() > self.max_bytes:
                self._entries.popitem(last=False)

    def nbytes_locked(self) -> int:
        return sum(nbytes(v) for v in self._entries.values())

    def nbytes(self) -> int:
        with self._lock:
            return self.nbytes_locked()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class ReferencePlan:
    """Which reference work this call does: nothing, or the reference branch from step `start`, after
    the inversion steps the cached trajectory lacks (`invert` of them); with `in_inversion` the
    controls record in the inversion's passes instead of a branch (the whole inversion is run)."""

    key: tuple | None = None
    work: ReferenceWork | None = None
    start: int = 0
    invert: int = 0
    branch: bool = False
    in_inversion: bool = False

    def passes(self, steps: int, iterations: int) -> int:
        """UNet passes of the reference work."""
        return self.invert * (1 + iterations) + (steps - self.start) * (self.branch and not self.in_inversion)


def reference_start(active, steps: int) -> int | None:
    """The first denoising step at which a control reads the reference branch (None: none does)."""
    wanted = [min(control.reference_steps(steps), default=steps) for control in active if control.needs_reference()]
    start = min(wanted, default=steps)
    return start if start < steps else None


def plan_reference(cache: ReferenceCache, run, active, key, steps: int, in_inversion: bool = False) -> ReferencePlan:
    """Look the texture up in `cache` when a control needs the reference (`key()`: its cache key);
    fill `run.recorded` with what the cache holds for this call's start step.

    `in_inversion` (reference_passes="inversion"): the controls record in the inversion's passes when
    every one that needs the reference can (else the branch runs); the inversion is then run from
    the clean reference, also where the cache holds part of it, so that the recordings do not depend
    on which calls came before."""
    start = reference_start(active, steps)
    if start is None:
        return ReferencePlan()
    work = cache.get(key()) or ReferenceWork()
    run.recorded.update(work.recorded.get(start, {}))
    needing = [control for control in active if control.needs_reference()]
    branch = any(control.missing(run.recorded) for control in needing)
    run.reference_cached = not branch
    in_inversion = branch and in_inversion and all(control.records_in_inversion() for control in needing)
    invert = (steps - start if in_inversion else max(0, steps - start - len(work.trajectory))) if branch else 0
    return ReferencePlan(key(), work, start, invert, branch, in_inversion)
