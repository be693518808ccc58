"""Which backend to run and how: the interpreter, the command line and the environment it gets.

Standard library only (no bpy): the preferences fill a `BackendConfig` through `resolve_config`, and
the client starts `config.command()` in `backend_root` with `process_env(...)`.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

ENV_PYTHON = "TEXTURE_VARIANTS_PYTHON"
ENV_COMMAND = "TEXTURE_VARIANTS_BACKEND_COMMAND"
ENV_BASE = "TEXTURE_VARIANTS_BASE"
ENV_IP_ADAPTER = "TEXTURE_VARIANTS_IP_ADAPTER"
ENV_DEVICE = "TEXTURE_VARIANTS_DEVICE"
# Programs that join their arguments into one command line for a remote shell: what is appended to
# a Backend Command that starts with one of them is quoted for that shell.
REMOTE_SHELL_PROGRAMS = ("ssh", "autossh", "plink")


@dataclass(frozen=True)
class BackendConfig:
    python: str | None = None  # the backend's interpreter (a venv with torch), not Blender's
    base: str | None = None  # default SD1.5 model: hub id, folder or checkpoint
    ip_adapter: str | None = None  # default IP-Adapter: hub id or folder
    device: str | None = None  # "auto", "cpu", "cuda", "cuda:1", "mps"
    # Trusting pickled weights (.ckpt/.bin can run code) is the choice of whoever starts the backend,
    # so it is a start option of the process, never a field of a request.
    allow_pickle: bool = False
    # A command line that starts `python -m backend serve` elsewhere (e.g. over ssh); replaces `python`.
    # The start options below are appended to it (ssh passes them on to the remote command).
    remote_command: str | None = None

    def command(self) -> list[str]:
        cmd = shlex.split(self.remote_command) if self.remote_command else [self.python, "-m", "backend", "serve"]
        options = []
        for flag, value in (("--base", self.base), ("--ip-adapter", self.ip_adapter), ("--device", self.device)):
            if value:
                options += [flag, value]
        if self.allow_pickle:
            options.append("--allow-pickle")
        # ssh joins its arguments with spaces and the remote shell splits them again: each one quoted
        # reaches the service as it was (spaces, quotes, $, ;), never run by that shell.
        return cmd + ([shlex.quote(option) for option in options] if runs_over_ssh(cmd) else options)


def runs_over_ssh(argv: list[str]) -> bool:
    """Whether a command line runs its command through a remote shell (ssh and its kin)."""
    program = os.path.basename(argv[0]).lower() if argv else ""
    return program.removesuffix(".exe") in REMOTE_SHELL_PROGRAMS


def setting_name(preference: str, variable: str, environ=os.environ) -> str:
    """How to name a setting in a hint: the environment variable when it overrides the preference."""
    if environ.get(variable):
        return f"the {variable} environment variable (it overrides {preference})"
    return f"{preference} in the add-on preferences (outside Blender: the {variable} environment variable)"


def resolve_config(python=None, base=None, ip_adapter=None, device=None, allow_pickle: bool = False,
                   command=None, environ=os.environ) -> BackendConfig:
    """The settings from the arguments, each overridden by its environment variable when that is set.

    The variables win so that a script or a render farm can point a saved .blend at its own
    interpreter and models without touching the user's preferences.
    """

    def pick(name: str, value):
        return environ.get(name) or (str(value) if value not in (None, "") else None)

    return BackendConfig(python=pick(ENV_PYTHON, python), base=pick(ENV_BASE, base),
                         ip_adapter=pick(ENV_IP_ADAPTER, ip_adapter), device=pick(ENV_DEVICE, device),
                         allow_pickle=bool(allow_pickle), remote_command=pick(ENV_COMMAND, command))


def default_backend_root() -> Path:
    """The folder that holds the `backend` package: next to this file (the extension zip) or above it (a checkout)."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "backend" / "__init__.py").is_file():
            return folder
    return here


def check(config: BackendConfig, backend_root: Path) -> None:
    """Raises `not_set_up` unless the interpreter (or the command) can run and the backend package is there."""
    if config.remote_command:
        try:
            program = shlex.split(config.remote_command)[0]
        except (ValueError, IndexError):
            program = None
        if not program or not shutil.which(program):
            raise UserError("not_set_up", f"the backend command {config.remote_command!r} cannot run here",
                            f"fix {setting_name('Backend Command', ENV_COMMAND)}")
        return
    python = config.python
    where = setting_name("Backend Python", ENV_PYTHON)
    if not python:
        raise UserError("not_set_up", "no Python interpreter is configured for the backend",
                        "click Set up backend in the add-on preferences, or set Backend Python there "
                        f"(outside Blender: the {ENV_PYTHON} environment variable)")
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise UserError("not_set_up", f"the backend interpreter {python} does not exist or cannot run",
                        f"click Set up backend in the add-on preferences, or fix {where}")
    if not (backend_root / "backend" / "__init__.py").is_file():
        raise UserError("not_set_up", f"no backend package in {backend_root}",
                        "reinstall the extension (its zip carries the backend)")


def process_env(backend_root: Path, environ=os.environ) -> dict[str, str]:
    """The backend's environment: this one, minus Blender's Python settings, plus the backend's path."""
    env = dict(environ)
    env.pop("PYTHONHOME", None)  # Blender's Python settings must not leak into the backend's
    env["PYTHONPATH"] = str(backend_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env
