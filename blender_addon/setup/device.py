"""Which torch build Set up Backend installs: CUDA for an NVIDIA GPU whose driver can run it, the
Metal-capable build on Apple silicon, otherwise the CPU build; always with the reason, for the panel.

Plain Python (no bpy): `nvidia-smi` and the platform are passed in, so tests fake them.
"""

from __future__ import annotations

import platform as _platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

# torch's own package indexes. The CPU index avoids PyPI's Linux wheel, which pulls GB of CUDA.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/{tag}"

# (build tag, CUDA version, the oldest driver that runs it on Linux, on Windows), newest first.
# cu130 is left out: CUDA 13 drops the Maxwell, Pascal and Volta GPUs that cu128 still runs.
CUDA_BUILDS = (
    ("cu128", "12.8", (570, 26), (570, 65)),
    ("cu126", "12.6", (560, 28), (560, 76)),
)

NVIDIA_SMI_QUERY = ("--query-gpu=name,driver_version", "--format=csv,noheader")


@dataclass(frozen=True)
class TorchBuild:
    kind: str  # "cpu", "cuda" or "mps": the device this build can use
    index: str | None  # torch's index to take it from; None = the general package index
    label: str  # "CUDA 12.8 build", for people
    reason: str  # why this build, for people

    def describe(self) -> str:
        return f"{self.label}: {self.reason}"


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str


def _driver_tuple(driver: str) -> tuple[int, ...]:
    return tuple(int(part) for part in driver.split(".") if part.isdigit())


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """The GPUs in `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader` output."""
    gpus = []
    for line in output.splitlines():
        name, sep, driver = line.rpartition(",")
        if sep and _driver_tuple(driver.strip()):
            gpus.append(Gpu(name.strip(), driver.strip()))
    return gpus


def query_nvidia_smi(which=shutil.which, run=subprocess.run) -> tuple[list[Gpu], str]:
    """(the NVIDIA GPUs, a note when nvidia-smi is missing or failed)."""
    exe = which("nvidia-smi")
    if exe is None:
        return [], "no NVIDIA driver found (nvidia-smi is not on PATH)"
    try:
        out = run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi did not answer ({e})"
    if out.returncode != 0:
        detail = (out.stdout + out.stderr).strip().splitlines()
        return [], f"nvidia-smi failed: {detail[0] if detail else f'exit code {out.returncode}'}"
    gpus = parse_nvidia_smi(out.stdout)
    return gpus, "" if gpus else "nvidia-smi lists no GPU"


def cuda_build_for(driver: str, platform: str = sys.platform) -> tuple[str, str] | None:
    """(build tag, CUDA version) of the newest CUDA build this driver runs, or None."""
    have = _driver_tuple(driver)
    for tag, cuda, linux_min, windows_min in CUDA_BUILDS:
        if have >= (windows_min if platform == "win32" else linux_min):
            return tag, cuda
    return None


def _oldest_driver(platform: str) -> str:
    oldest = CUDA_BUILDS[-1][3 if platform == "win32" else 2]
    return ".".join(map(str, oldest))


def cpu_build(reason: str, platform: str = sys.platform) -> TorchBuild:
    index = TORCH_CPU_INDEX if platform in ("linux", "win32") else None
    return TorchBuild("cpu", index, "CPU build", reason)


def _cuda_build(gpus: list[Gpu], platform: str, chosen: bool) -> TorchBuild | None:
    gpu = gpus[0]
    found = cuda_build_for(gpu.driver, platform)
    if found is None:
        return None
    tag, cuda = found
    why = f"{gpu.name} with driver {gpu.driver} runs CUDA {cuda}"
    return TorchBuild("cuda", TORCH_CUDA_INDEX.format(tag=tag), f"CUDA {cuda} build",
                      ("chosen in Device; " if chosen else "") + why)


def choose_build(device: str = "auto", platform: str = sys.platform, machine: str | None = None,
                 nvidia=query_nvidia_smi) -> TorchBuild:
    """The torch build for `device` ("auto", "cuda", "mps" or "cpu") on this computer."""
    machine = (machine or _platform.machine()).lower()
    if device == "cpu":
        return cpu_build("chosen in Device (works on every computer; diffusion is slow)", platform)
    if platform == "darwin":
        if machine == "arm64":
            return TorchBuild("mps", None, "Metal build", "Apple silicon: torch's macOS build uses the GPU")
        return cpu_build("an Intel Mac has no GPU torch can use", platform)
    gpus, note = nvidia()
    if gpus:
        build = _cuda_build(gpus, platform, chosen=device == "cuda")
        if build:
            return build
        note = (f"driver {gpus[0].driver} of {gpus[0].name} is older than torch's CUDA builds need "
                f"({_oldest_driver(platform)}): update the NVIDIA driver, then Repair")
    if device == "cuda":
        # Asked for explicitly: install the common CUDA build and let the check say if it runs.
        tag, cuda = CUDA_BUILDS[0][:2]
        return TorchBuild("cuda", TORCH_CUDA_INDEX.format(tag=tag), f"CUDA {cuda} build",
                          f"chosen in Device, although {note}")
    if device == "mps":
        return cpu_build("Metal needs Apple silicon", platform)
    return cpu_build(note, platform)
