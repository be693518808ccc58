"""backend.diffusion.allocator: with it, a freed large tensor's memory is reused without page faults."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
import torch.nn.functional as F
from backend.diffusion import allocator
torch.set_num_threads(1)
applied = allocator.keep_freed_memory()
x, w = torch.randn(1, 64, 200, 200), torch.randn(64, 64, 3, 3) * 0.05
def faults():  # one decoder-like step: upsampled (40 MiB), wrapped, convolved, activated, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        y = F.silu(F.conv2d(F.pad(F.interpolate(x, scale_factor=2.0), (1, 1, 1, 1), mode="circular"), w))
    del y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(), faults()
print(json.dumps({"applied": applied, "faults": [faults() for _ in range(5)]}))
"""


def _probe(keep: str) -> dict:
    env = {**os.environ, "TEXTURE_VARIANTS_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_large_tensors_are_reused_without_page_faults_and_the_switch_turns_it_off():
    kept, default = _probe("1"), _probe("0")
    pages = 40 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # one upsampled activation
    assert kept["applied"] is True and default["applied"] is False
    assert min(default["faults"]) > pages  # every large activation starts as fresh pages
    # freed blocks are reused from the heap (now and then a block lands on fresh heap: counted in the sum)
    assert sorted(kept["faults"])[2] < pages // 10 and sum(kept["faults"]) < sum(default["faults"]) / 5
