"""Stands in for the base Python (`-m venv`), pip (`-m pip`) and uv in set-up tests.

Installing "links" the real packages of the test environment into the new one (a .pth file), so the
set-up's own check (`python -m backend --version`) runs for real. FAKE_INSTALLER picks what happens:
  ok        every command succeeds
  network   torch installs, then the rest fails as when the network drops halfway
  disk_full torch fails as when the disk fills up (after writing part of a file)
  hang      torch prints that it is downloading, then waits (for the test to cancel)
  no_uv     installing uv itself fails (the set-up then goes on with pip)
Environment: FAKE_TEMPLATE (a venv without pip whose site-packages holds this file as pip), and
FAKE_SITE (the site-packages folder with the real packages).
"""

import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

PIP_CONFIG = """:env:.find-links='/env/wheels'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/global/wheels'
global.index-url='https://mirror.example/simple'
"""


def _site_packages(args: list[str]) -> Path:
    if "--python" in args:  # uv: the environment's python is named
        python = Path(args[args.index("--python") + 1])
        return next((python.parent.parent / "lib").glob("python*/site-packages"))
    return Path(sysconfig.get_paths()["purelib"])  # pip: the environment running it


def _install(args: list[str]) -> int:
    mode = os.environ.get("FAKE_INSTALLER", "ok")
    site = _site_packages(args)
    uv_settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("UV_"))
    if uv_settings:
        print("uv settings: " + ", ".join(uv_settings))
    if mode == "no_uv" and "uv" in args:
        print("ERROR: No matching distribution found for uv")
        return 1
    if any(a.startswith("torch") for a in args):
        print("Collecting torch==2.13.0", flush=True)
        print("  Downloading torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (191.8 MB)", flush=True)
        if mode == "disk_full":
            (site / "torch-partial.bin").write_bytes(bytes(1 << 16))
            print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device")
            return 1
        if mode == "hang":
            Path(os.environ["FAKE_PID_FILE"]).write_text(str(os.getpid()))
            time.sleep(120)
            return 1
    elif mode == "network":
        print("Collecting diffusers==0.42.1")
        print("WARNING: Retrying after connection broken by 'NewConnectionError: Failed to establish a new "
              "connection: [Errno 101] Network is unreachable'")
        print("ERROR: No matching distribution found for diffusers==0.42.1")
        return 1
    (site / "fake-installed.pth").write_text(os.environ["FAKE_SITE"] + "\n")
    print("Successfully installed " + " ".join(a for a in args if not a.startswith("-"))[:200])
    return 0


def main(args: list[str]) -> int:
    if args[:2] == ["-m", "venv"]:  # the base Python making the environment
        shutil.copytree(os.environ["FAKE_TEMPLATE"], args[-1], symlinks=True)
        return 0
    if args[:2] == ["pip", "install"] or args[:1] == ["install"]:  # uv pip install / pip install
        return _install(args)
    if args[:2] == ["config", "list"]:
        print(PIP_CONFIG, end="")
        return 0
    print(f"fake installer: unexpected arguments {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
