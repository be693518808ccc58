"""The plan of Set up Backend: which commands, with which installer, from which package indexes.

Plain Python (no bpy). `setup_steps` is the plan (also printed for people who install by hand, e.g.
when Blender's online access is off); runner.SetupRun runs it. The backend code itself is not
installed: it runs from the extension folder (the client puts it on PYTHONPATH), so only its
dependencies are.

Indexes: torch comes from torch's own index for the chosen build (setup.device), everything else
from PyPI; the preferences or TEXTURE_VARIANTS_TORCH_INDEX / TEXTURE_VARIANTS_INDEX name another
index, or `default` for whatever the installer is configured with (pip.conf, PIP_INDEX_URL, ...).
uv does not read pip's configuration, so the plan hands it pip's (`pip config list`): both
installers see the same indexes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import tomllib

from ..errors import UserError
from .device import TorchBuild

PYPI = "https://pypi.org/simple"
DEFAULT = "default"  # an index setting meaning "the installer's own configuration"
ENV_TORCH_INDEX = "TEXTURE_VARIANTS_TORCH_INDEX"
ENV_INDEX = "TEXTURE_VARIANTS_INDEX"
INSTALLERS = ("auto", "uv", "pip")

# Disk space a set-up needs, per torch build: the environment plus the installer's cache. The CPU
# build on Linux measured 1.5 GB of environment and 1.1 GB of uv cache; CUDA adds ~3 GB of wheels to each.
GB = 1024 ** 3
SPACE_NEEDED = {"cpu": 3 * GB, "mps": 3 * GB, "cuda": 10 * GB}

# pip's configuration keys -> uv's environment variables (and how uv separates several values).
PIP_TO_UV = {"index-url": ("UV_INDEX_URL", " "), "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
             "find-links": ("UV_FIND_LINKS", ","), "constraint": ("UV_CONSTRAINT", " "),
             "cert": ("SSL_CERT_FILE", " "), "no-index": ("UV_NO_INDEX", " ")}
_SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}  # pip: environment > [install] > [global]


@dataclass(frozen=True)
class Step:
    label: str
    argv: tuple[str, ...]
    cwd: str | None = None
    # The step's output, turned into environment variables for the steps after it.
    env_from_output: Callable[[str], dict] | None = field(default=None, compare=False)
    # When this step fails, these replace the rest of the plan (uv could not be had: use pip).
    fallback: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Indexes:
    torch: str | None  # an index URL, or None for the installer's configured index
    packages: str | None

    def describe(self) -> str:
        def name(url):
            return url or "the installer's configured index"
        return f"torch from {name(self.torch)}, the rest from {name(self.packages)}"


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


def _index_setting(name: str, value: str, fallback: str | None) -> str | None:
    value = value.strip()
    if not value:
        return fallback
    if value.lower() == DEFAULT:
        return None
    if urlparse(value).scheme not in ("http", "https", "file"):
        raise UserError("bad_setting", f"{name} is not a package index URL: {value!r}",
                        f"give an http(s):// or file:// URL, or '{DEFAULT}' for the installer's own")
    return value


def resolve_indexes(build: TorchBuild, torch_index: str = "", index: str = "",
                    environ=os.environ) -> Indexes:
    """The indexes: environment variables, then the preferences, then torch's index and PyPI."""
    return Indexes(
        torch=_index_setting("Torch Index", environ.get(ENV_TORCH_INDEX) or torch_index, build.index or PYPI),
        packages=_index_setting("Package Index", environ.get(ENV_INDEX) or index, PYPI),
    )


def find_uv(which=shutil.which) -> str | None:
    """A uv already on PATH; otherwise the plan installs one into the new environment."""
    return which("uv")


def uv_env_from_pip_config(output: str, environ=os.environ) -> dict:
    """uv's environment variables for what `pip config list` printed (those set already win)."""
    found: dict[str, tuple[int, str]] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        section, _, name = key.strip().rpartition(".")
        if sep and name in PIP_TO_UV and section in _SECTION_RANK:  # not e.g. [download]'s settings
            rank = _SECTION_RANK[section]
            if rank >= found.get(name, (-1, ""))[0]:
                found[name] = (rank, value.strip().strip("'\""))
    env = {}
    for name, (_, value) in found.items():
        variable, separator = PIP_TO_UV[name]
        if name == "no-index":
            value = "1" if value.lower() in ("1", "true", "yes", "on") else ""
        if value and variable not in environ:
            env[variable] = separator.join(value.split())
    # pip takes the best version across all its indexes; uv's default stops at the first index.
    if "UV_INDEX_STRATEGY" not in environ:
        env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return env


def _index_args(url: str | None) -> tuple[str, ...]:
    return ("--index-url", url) if url else ()


def _pip(py: str) -> tuple[str, ...]:
    return (py, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check")


def _install_steps(prefix: tuple[str, ...], backend_root: Path, indexes: Indexes) -> list[Step]:
    constraints = backend_root / "constraints.txt"
    requirements = backend_requirements(backend_root)
    torch_reqs = [r for r in requirements if re.match(r"torch\b", r)]
    others = [r for r in requirements if r not in torch_reqs]
    version = pinned_version("torch", constraints)
    torch_spec = f"torch=={version}" if version else (torch_reqs[0] if torch_reqs else "torch")
    return [
        Step("Installing torch", (*prefix, torch_spec, *_index_args(indexes.torch))),
        Step("Installing diffusers, transformers and the rest",
             (*prefix, "-c", str(constraints), *others, *_index_args(indexes.packages))),
    ]


def setup_steps(base_python: str, venv_dir: str | os.PathLike, backend_root: str | os.PathLike,
                indexes: Indexes, installer: str = "pip", uv: str | None = None,
                platform: str = sys.platform) -> list[Step]:
    """The commands that make a working backend environment in `venv_dir`, in order.

    installer: "pip", or "uv" (`uv`: the uv executable to use; None installs uv into the new
    environment first, falling back to pip when that fails).
    """
    backend_root = Path(backend_root)
    py = str(venv_python(venv_dir, platform))
    check = Step("Checking the backend", (py, "-m", "backend", "--version"), cwd=str(backend_root))
    pip_steps = [*_install_steps(_pip(py), backend_root, indexes), check]
    steps = [Step("Creating the virtual environment", (base_python, "-m", "venv", str(venv_dir)))]
    if installer == "pip":
        return steps + pip_steps
    uv_prefix = (uv,) if uv else (py, "-m", "uv")
    if not uv:
        steps.append(Step("Installing uv (a faster installer)", (*_pip(py), "uv", *_index_args(indexes.packages)),
                          fallback=tuple(pip_steps)))
    steps.append(Step("Reading pip's index configuration for uv", (py, "-m", "pip", "config", "list"),
                      env_from_output=uv_env_from_pip_config))
    return steps + _install_steps((*uv_prefix, "pip", "install", "--python", py), backend_root, indexes) + [check]


def manual_instructions(steps: list[Step]) -> str:
    """The same plan as shell commands, for installing by hand."""
    lines = []
    for step in steps:
        cmd = shlex.join(step.argv)
        lines.append(f"cd {shlex.quote(step.cwd)} && {cmd}" if step.cwd else cmd)
    return "\n".join(lines)


def plan_stamp(backend_root: str | os.PathLike, build: TorchBuild) -> str:
    """What the environment is made of: when this changes, Set up Backend rebuilds it."""
    root = Path(backend_root)
    digest = hashlib.sha256(build.label.encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]
