"""The reference work of one texture, kept between calls: inverted latents and what controls recorded.

Inverting the reference and running its branch cost two full denoising passes; asking for more
variants of the same texture should cost neither. Entries are keyed by everything that changes them
(pixels, size, steps, model, tiling, conditioning) and evicted least recently used once their total
size passes a byte budget (TEXTURE_VARIANTS_CACHE_MB, default 2048).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

DEFAULT_BUDGET_MB = 2048


@dataclass
class ReferenceWork:
    inverted: torch.Tensor  # (1, 4, h, w): the reference's latents DDIM-inverted to the first timestep
    recorded: dict = field(default_factory=dict)  # what controls recorded in the reference branch

    def nbytes(self) -> int:
        tensors = [self.inverted]
        for value in self.recorded.values():  # a tensor, or a tuple of them (K/V pairs)
            tensors += list(value) if isinstance(value, (tuple, list)) else [value]
        return sum(t.numel() * t.element_size() for t in tensors)


class ReferenceCache:
    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("TEXTURE_VARIANTS_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, ReferenceWork] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> ReferenceWork | None:
        with self._lock:
            work = self._entries.get(key)
            if work is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return work

    def put(self, key: tuple, work: ReferenceWork) -> None:
        """Store (or refresh) an entry, then evict the oldest ones beyond the budget.

        An entry larger than the whole budget is not kept at all.
        """
        with self._lock:
            self._entries[key] = work
            self._entries.move_to_end(key)
            while self._entries and self.nbytes_locked() > self.max_bytes:
                self._entries.popitem(last=False)

    def nbytes_locked(self) -> int:
        return sum(w.nbytes() for w in self._entries.values())

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
