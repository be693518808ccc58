"""Which torch build Set up Backend picks (blender_addon/setup/device.py), with faked nvidia-smi and platforms."""

from __future__ import annotations

import subprocess

import pytest

from blender_addon.setup import device as dd

RTX_575 = "NVIDIA GeForce RTX 4090, 575.51.03\n"
TWO_GPUS = "NVIDIA H200, 570.133.20\nNVIDIA H200, 570.133.20\n"
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
             "latest NVIDIA driver is installed and running.\n")


def fake_smi(stdout="", returncode=0, missing=False, raises=None):
    """query_nvidia_smi with a faked `which` and `run`; records the command line it ran."""
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        if raises:
            raise raises
        return subprocess.CompletedProcess(argv, returncode, stdout, "")

    def query():
        return dd.query_nvidia_smi(which=lambda name: None if missing else f"/usr/bin/{name}", run=run)

    query.calls = calls
    return query


def test_nvidia_smi_is_asked_for_names_and_driver_versions():
    smi = fake_smi(TWO_GPUS)
    gpus, note = smi()
    assert smi.calls == [["/usr/bin/nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]]
    assert gpus == [dd.Gpu("NVIDIA H200", "570.133.20")] * 2 and note == ""
    assert dd.parse_nvidia_smi("Quadro, with comma, 560.94\n\n") == [dd.Gpu("Quadro, with comma", "560.94")]


@pytest.mark.parametrize("driver, platform, tag", [
    ("575.51.03", "linux", "cu128"), ("570.26", "linux", "cu128"), ("570.25", "linux", "cu126"),
    ("560.35.03", "linux", "cu126"), ("570.64", "win32", "cu126"), ("572.16", "win32", "cu128"),
    ("560.28", "win32", None), ("535.183.01", "linux", None), ("610.1", "linux", "cu128"),
])
def test_the_driver_decides_the_cuda_build(driver, platform, tag):
    found = dd.cuda_build_for(driver, platform)
    assert (found[0] if found else None) == tag


def test_auto_on_a_computer_with_an_nvidia_gpu_takes_the_cuda_build_and_says_why():
    build = dd.choose_build("auto", "linux", "x86_64", nvidia=fake_smi(RTX_575))
    assert build.kind == "cuda" and build.index == "https://download.pytorch.org/whl/cu128"
    assert build.label == "CUDA 12.8 build"
    assert build.describe() == "CUDA 12.8 build: NVIDIA GeForce RTX 4090 with driver 575.51.03 runs CUDA 12.8"


def test_an_old_driver_falls_back_to_cpu_and_says_what_to_update():
    build = dd.choose_build("auto", "linux", "x86_64", nvidia=fake_smi("Tesla T4, 535.104.05\n"))
    assert build.kind == "cpu" and build.index == dd.TORCH_CPU_INDEX
    assert "driver 535.104.05 of Tesla T4 is older than torch's CUDA builds need (560.28)" in build.reason
    assert "update the NVIDIA driver" in build.reason


@pytest.mark.parametrize("smi, expected", [
    (fake_smi(missing=True), "no NVIDIA driver found (nvidia-smi is not on PATH)"),
    (fake_smi(NO_DRIVER, returncode=9), "nvidia-smi failed: NVIDIA-SMI has failed because it couldn't"),
    (fake_smi(raises=subprocess.TimeoutExpired("nvidia-smi", 20)), "nvidia-smi did not answer"),
    (fake_smi("No devices were found\n"), "nvidia-smi lists no GPU"),
])
def test_without_a_usable_nvidia_gpu_auto_takes_the_cpu_build_and_says_why(smi, expected):
    build = dd.choose_build("auto", "win32", "AMD64", nvidia=smi)
    assert build.kind == "cpu" and build.index == dd.TORCH_CPU_INDEX
    assert build.reason.startswith(expected)


def test_cpu_is_always_offered_even_with_a_gpu():
    smi = fake_smi(RTX_575)
    build = dd.choose_build("cpu", "linux", "x86_64", nvidia=smi)
    assert build.kind == "cpu" and build.index == dd.TORCH_CPU_INDEX and "chosen in Device" in build.reason
    assert smi.calls == []  # no need to ask the driver


def test_asking_for_cuda_without_a_driver_installs_it_anyway_and_says_so():
    build = dd.choose_build("cuda", "linux", "x86_64", nvidia=fake_smi(missing=True))
    assert build.kind == "cuda" and build.index.endswith("/cu128")
    assert build.reason == "chosen in Device, although no NVIDIA driver found (nvidia-smi is not on PATH)"
    chosen = dd.choose_build("cuda", "linux", "x86_64", nvidia=fake_smi(RTX_575))
    assert chosen.reason.startswith("chosen in Device; NVIDIA GeForce RTX 4090")


def test_apple_silicon_takes_the_metal_build_from_the_general_index():
    smi = fake_smi(missing=True)
    build = dd.choose_build("auto", "darwin", "arm64", nvidia=smi)
    assert (build.kind, build.index, build.label) == ("mps", None, "Metal build")
    assert "Apple silicon" in build.reason and smi.calls == []
    intel = dd.choose_build("auto", "darwin", "x86_64", nvidia=smi)
    assert intel.kind == "cpu" and intel.index is None and "Intel Mac" in intel.reason
    assert dd.choose_build("cpu", "darwin", "arm64").kind == "cpu"
    assert dd.choose_build("mps", "linux", "x86_64", nvidia=smi).kind == "cpu"
