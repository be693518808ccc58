"""Set up backend: a virtual environment in the extension's user folder with the backend's packages.

Plain Python (no bpy). `setup_steps` is the plan (also printed for people who install by hand, e.g.
when Blender's online access is off); `SetupRun` runs it in a worker thread and exposes progress
that the preferences' modal operator reads on a timer. The backend code itself is not installed:
it runs from the extension folder (the client puts it on PYTHONPATH), so only its dependencies are.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import tomllib

# torch's own package index for builds without CUDA (PyPI's Linux wheel pulls several GB of CUDA).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


@dataclass(frozen=True)
class Step:
    label: str
    argv: tuple[str, ...]
    cwd: str | None = None


def venv_python(venv_dir: str | os.PathLike, platform: str = sys.platform) -> Path:
    venv_dir = Path(venv_dir)
    return venv_dir / ("Scripts/python.exe" if platform == "win32" else "bin/python")


def backend_requirements(backend_root: str | os.PathLike) -> list[str]:
    """The backend's dependencies as declared in its pyproject.toml (shipped in the extension zip)."""
    with open(Path(backend_root) / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def pinned_version(package: str, constraints_path: str | os.PathLike) -> str | None:
    """The exact version constraints.txt pins for `package`, or None."""
    pattern = re.compile(rf"^\s*{re.escape(package)}\s*==\s*([^\s;#]+)", re.IGNORECASE)
    for line in Path(constraints_path).read_text(encoding="utf-8").splitlines():
        if m := pattern.match(line):
            return m.group(1)
    return None


def torch_index(device: str, platform: str = sys.platform) -> str | None:
    """Which index to take torch from: CPU builds from torch's index, CUDA on Windows too."""
    if device == "cpu" and platform in ("linux", "win32"):
        return TORCH_CPU_INDEX
    if device == "cuda" and platform == "win32":
        return TORCH_CUDA_INDEX
    return None  # PyPI: CUDA build on Linux, Metal-capable build on macOS


def setup_steps(base_python: str, venv_dir: str | os.PathLike, backend_root: str | os.PathLike,
                device: str = "auto", platform: str = sys.platform) -> list[Step]:
    """The commands that make a working backend environment, in order."""
    backend_root = Path(backend_root)
    constraints = backend_root / "constraints.txt"
    py = str(venv_python(venv_dir, platform))
    pip = (py, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check")
    requirements = backend_requirements(backend_root)
    torch_reqs = [r for r in requirements if re.match(r"torch\b", r)]
    others = [r for r in requirements if r not in torch_reqs]
    version = pinned_version("torch", constraints)
    torch_spec = f"torch=={version}" if version else (torch_reqs[0] if torch_reqs else "torch")
    index = torch_index(device, platform)
    return [
        Step("Creating the virtual environment", (base_python, "-m", "venv", str(venv_dir))),
        Step("Installing torch", (*pip, torch_spec, *(("--index-url", index) if index else ()))),
        Step("Installing diffusers, transformers and the rest", (*pip, "-c", str(constraints), *others)),
        Step("Checking the backend", (py, "-m", "backend", "--version"), cwd=str(backend_root)),
    ]


def manual_instructions(steps: list[Step]) -> str:
    """The same plan as shell commands, for installing by hand."""
    lines = []
    for step in steps:
        cmd = shlex.join(step.argv)
        lines.append(f"cd {shlex.quote(step.cwd)} && {cmd}" if step.cwd else cmd)
    return "\n".join(lines)


class SetupRun:
    """Runs the steps one after another in a worker thread; poll its fields from the main thread."""

    def __init__(self, steps: list[Step], env: dict | None = None):
        self.steps = list(steps)
        self.index = 0  # the step running now (== len(steps) when all succeeded)
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.error: str | None = None
        self.finished = False
        self._env = env
        self._cancelled = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="texture-variants-setup", daemon=True)

    def start(self) -> SetupRun:
        self._thread.start()
        return self

    @property
    def label(self) -> str:
        return self.steps[self.index].label if self.index < len(self.steps) else "Done"

    @property
    def fraction(self) -> float:
        return self.index / len(self.steps) if self.steps else 1.0

    @property
    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""

    def cancel(self) -> None:
        self._cancelled.set()
        if self._process and self._process.poll() is None:
            self._process.terminate()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            for index, step in enumerate(self.steps):
                self.index = index
                if self._cancelled.is_set():
                    self.error = "cancelled"
                    return
                self.lines.append(f"$ {shlex.join(step.argv)}")
                self._process = subprocess.Popen(
                    step.argv, cwd=step.cwd, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, errors="replace",
                )
                for line in self._process.stdout:
                    if line.strip():
                        self.lines.append(line.rstrip())
                code = self._process.wait()
                if self._cancelled.is_set():
                    self.error = "cancelled"
                    return
                if code != 0:
                    self.error = f"{step.label} failed (exit code {code}): {self.last_line}"
                    return
            self.index = len(self.steps)
        except OSError as e:
            self.error = f"{self.label} failed: {e}"
        finally:
            self.finished = True
