"""What the service reports about its memory in `status` and `unload`: its resident memory and, once
torch has touched a GPU, the GPU memory it holds."""

from __future__ import annotations

import os
import sys


def memory_report(torch_imported: bool) -> dict:
    """Resident memory of this process and, when torch has touched a GPU, its memory (MiB).

    `torch_imported` says the warm-up thread finished importing torch: until then `sys.modules` may
    hold a half-initialised torch without `torch.cuda`."""
    mem: dict = {"rss_mb": None, "gpu_allocated_mb": None, "gpu_reserved_mb": None}
    try:
        with open("/proc/self/statm") as f:
            mem["rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, AttributeError):
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            mem["peak_rss_mb"] = round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
        except ImportError:
            pass
    torch = sys.modules.get("torch") if torch_imported else None
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            mem["gpu_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            mem["gpu_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
    except AttributeError:  # a diffusion job is importing torch right now: no GPU figures yet
        pass
    return mem
