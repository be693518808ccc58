"""Every model the backend keeps loaded between calls, in one place: load once, list, unload.

A model kind ("pipeline", "sam", "content_encoder", "marigold", "lgp", "controlnet", "fast_lora",
"taesd") holds one model at a time: asking for another key of the same kind frees the old one
first (SD1.5 + ViT-H is several GB; two would not fit where one barely does). Loading happens under
the registry's lock, so two threads asking for the same model load it once. `unload()` drops every
kind and returns the device's cached memory; `loaded()` is what the service's hello/status report.

Torch-free at import: the service lists what is loaded without importing torch.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    key: Hashable
    model: object
    description: dict = field(default_factory=dict)


class ModelRegistry:
    """One load-once, thread-safe, unloadable cache for every model kind."""

    def __init__(self):
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self.loads: dict[str, int] = {}  # models read from disk per kind (tests check reuse with it)

    def get(self, kind: str, key: Hashable, build: Callable[[], object], describe: dict | None = None):
        """The model of `kind` for `key`, built by `build()` the first time (another key of the
        same kind is freed before building). `describe`: what `loaded()` reports for it."""
        with self._lock:
            entry = self._entries.get(kind)
            if entry is not None and entry.key == key:
                return entry.model
            if entry is not None:
                self._drop(kind)
            log.info("loading %s %s", kind, describe or key)
            model = build()
            self._entries[kind] = _Entry(key, model, dict(describe or {}))
            self.loads[kind] = self.loads.get(kind, 0) + 1
            return model

    def peek(self, kind: str):
        """The loaded model of `kind`, or None (loads nothing)."""
        with self._lock:
            entry = self._entries.get(kind)
            return None if entry is None else entry.model

    def keys(self, kind: str) -> list:
        with self._lock:
            return [self._entries[kind].key] if kind in self._entries else []

    def loaded(self) -> list[dict]:
        """What is in memory: [{"kind": ..., **description}], in load order."""
        with self._lock:
            return [{"kind": kind, **entry.description} for kind, entry in self._entries.items()]

    def load_count(self) -> int:
        with self._lock:
            return sum(self.loads.values())

    def unload(self, kind: str | None = None) -> list[dict]:
        """Free one kind (or every kind) and the device's cached memory; returns what was freed."""
        with self._lock:
            kinds = [kind] if kind is not None else list(self._entries)
            freed = [{"kind": k, **self._entries[k].description} for k in kinds if k in self._entries]
            for k in kinds:
                self._drop(k)
        _release_memory()
        return freed

    def _drop(self, kind: str) -> None:
        if self._entries.pop(kind, None) is not None:
            gc.collect()  # reference cycles inside the model (modules, hooks) go now, not later


def load_pretrained(kind: str, cls, folder, device: str, dtype: str, fix: str):
    """A diffusers model class's `from_pretrained(folder)` (safetensors, local files only), frozen on
    `device`, kept in the registry as `kind`; ModelsMissingError saying `fix` when it cannot load."""

    def build():
        import torch

        from backend.errors import ModelsMissingError

        try:
            model = cls.from_pretrained(folder, torch_dtype=getattr(torch, dtype), use_safetensors=True,
                                        local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelsMissingError(f"could not load the {kind} from {folder}: {e}", hint=fix) from e
        return model.to(device).eval().requires_grad_(False)

    return registry.get(kind, (folder, device, dtype), build, {"path": str(folder), "device": device, "dtype": dtype})


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        torch.mps.empty_cache()


registry = ModelRegistry()
