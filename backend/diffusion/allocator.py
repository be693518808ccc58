"""glibc's allocator, told to keep freed memory for reuse instead of returning it page by page.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and gives
it back with munmap when it is freed, so each large activation of a CPU pass (a VAE decoder layer at
full resolution, the padded copy of a wrapped convolution) starts as untouched pages: one page
fault per 4 KiB, with the kernel zeroing each. Measured on the full-size SD VAE decoder (4 latents
of 16², one thread, interleaved, a loaded machine): the plain decoder took 180 000 minor faults per
call and the wrapped one (one pad per convolution) 440 000, 1.1-1.35x the plain one's time; with
this setting both took none and the wrapped decoder cost 0.97x the plain one (the copies themselves
are cheap: the faults were the cost). The threshold's cap keeps `M_MMAP_THRESHOLD` from helping;
turning mmap off (`M_MMAP_MAX` = 0) and raising the trim threshold does: large blocks come from the
heap and freed ones are reused.

The cost: the process keeps the memory of its largest call (the heap is not trimmed below 2 GiB of
free space), which a process holding several GB of models can afford. Applied once, when the
diffusion engine first loads a pipeline on the CPU, on glibc only; TEXTURE_VARIANTS_KEEP_FREED_MEMORY=0
leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}  # mallopt takes an int: about 2 GiB
ENV = "TEXTURE_VARIANTS_KEEP_FREED_MEMORY"

_applied: bool | None = None


def glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def mallopt(settings: dict[int, int]) -> bool:
    """Set glibc malloc parameters; whether every one was accepted (False off glibc)."""
    if not glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all([bool(libc.mallopt(param, value)) for param, value in settings.items()])
    except (OSError, AttributeError):
        return False


def keep_freed_memory() -> bool:
    """Turn off mmap for large blocks and raise the trim threshold (once per process); whether the
    allocator now keeps freed memory."""
    global _applied
    if _applied is None:
        _applied = os.environ.get(ENV, "1") != "0" and mallopt(KEEP)
        log.debug("glibc keeps freed memory for reuse: %s", _applied)
    return _applied
