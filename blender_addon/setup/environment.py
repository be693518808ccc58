"""The backend's environment on disk: built beside its place, swapped in only when it works.

Plain Python (no bpy). A set-up builds into `<venv>.partial` next to the environment and renames it
into place after its check passed, so a failed, cancelled or interrupted set-up leaves the previous
working environment, or nothing. A later run first undoes what an interrupted one left (a partial
folder, or the previous environment moved aside) and starts clean; what was downloaded stays in the
installer's cache, so it is not downloaded again. The plan is setup.plan's, the runner setup.runner's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ..errors import UserError
from .device import TorchBuild
from .plan import GB, SPACE_NEEDED, Indexes, plan_stamp, setup_steps, venv_python
from .runner import CANCELLED, SetupRun

STATE_FILE = "texture-variants-setup.json"

# What an installer prints when the disk is full, and when an index cannot be reached.
_DISK_FULL = re.compile(r"No space left on device|Errno 28|ENOSPC|There is not enough space", re.I)
_NETWORK = re.compile(r"Failed to establish a new connection|Temporary failure in name resolution|"
                      r"Max retries exceeded|ConnectionError|Connection (reset|refused|timed out)|"
                      r"Read timed out|error sending request|Failed to fetch|Could not fetch URL|"
                      r"No matching distribution found|Network is unreachable", re.I)


class BackendEnvironment:
    """The set-up's folders: the environment, its build folder, and the log."""

    def __init__(self, target: str | os.PathLike, platform: str = sys.platform):
        self.target = Path(target)
        self.staging = self.target.with_name(self.target.name + ".partial")
        self.previous = self.target.with_name(self.target.name + ".previous")
        self.log = self.target.with_name("setup.log")
        self.platform = platform

    @property
    def python(self) -> Path:
        return venv_python(self.target, self.platform)

    def state(self) -> dict | None:
        """What the last successful set-up recorded (build, indexes, installer, time), or None."""
        try:
            return json.loads((self.target / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_current(self, stamp: str) -> bool:
        state = self.state()
        return bool(state) and state.get("stamp") == stamp and self.python.exists()

    def recover(self) -> None:
        """Undo an interrupted set-up: put the moved-aside environment back, drop a partial build."""
        if self.previous.exists():
            if self.target.exists():
                shutil.rmtree(self.previous)
            else:
                os.replace(self.previous, self.target)
        if self.staging.exists():
            shutil.rmtree(self.staging)

    def free_space(self, disk_usage=shutil.disk_usage) -> int:
        folder = self.target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return disk_usage(folder).free

    def space_note(self, kind: str, disk_usage=shutil.disk_usage) -> str:
        return (f"Needs about {SPACE_NEEDED[kind] / GB:.0f} GB free; "
                f"{self.free_space(disk_usage) / GB:.1f} GB free in {self.target.parent}")

    def check_space(self, kind: str, disk_usage=shutil.disk_usage) -> None:
        free = self.free_space(disk_usage)
        if free < SPACE_NEEDED[kind]:
            raise UserError("disk_full", f"Not enough disk space for the backend: {self.space_note(kind, disk_usage)}",
                            "free some space on that disk, then click Set up Backend again")

    def commit(self, state: dict) -> None:
        """Move the checked build into place; the environment it replaces is deleted after.

        Scripts in bin/ (pip, activate) keep the build folder's path in their first line after the
        move; nothing uses them: the add-on and the manual instructions run `python -m …`.
        """
        (self.staging / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        if self.target.exists():
            os.replace(self.target, self.previous)
        os.replace(self.staging, self.target)
        shutil.rmtree(self.previous, ignore_errors=True)

    def remove(self) -> bool:
        """Delete the environment and any leftovers; False when there was nothing."""
        found = False
        for folder in (self.target, self.staging, self.previous):
            if folder.exists():
                shutil.rmtree(folder)
                found = True
        return found


def advice(error: str, output: str, environment: BackendEnvironment, indexes: Indexes, kind: str) -> str:
    """The error as the user sees it: what happened, what is left, and what to do."""
    kept = ("The previous backend is still in place." if environment.python.exists()
            else "Nothing was left behind.")
    if error == CANCELLED:
        return f"Set-up cancelled. {kept} Click Set up Backend to start again."
    if _DISK_FULL.search(output):
        what = (f"The disk is full ({error}). {kept} Free at least {SPACE_NEEDED[kind] / GB:.0f} GB "
                f"in {environment.target.parent}, then click Set up Backend again.")
    elif _NETWORK.search(output):
        what = (f"A package index could not be reached or lacks a package ({error}; {indexes.describe()}). "
                f"{kept} Check the internet connection and the Torch Index / Package Index settings, then "
                "click Set up Backend again: what was downloaded is kept in the installer's cache.")
    else:
        what = f"{error}. {kept} Click Repair to try again."
    return f"{what} Log: {environment.log}"


def start_setup(environment: BackendEnvironment, base_python: str, backend_root: str | os.PathLike,
                build: TorchBuild, indexes: Indexes, installer: str = "uv", uv: str | None = None,
                env: dict | None = None) -> SetupRun:
    """Build a fresh environment beside the current one and swap it in when its check passed."""
    environment.recover()
    environment.check_space(build.kind)
    steps = setup_steps(base_python, environment.staging, backend_root, indexes, installer, uv,
                        environment.platform)
    state = {"stamp": plan_stamp(backend_root, build), "build": build.describe(), "kind": build.kind,
             "indexes": indexes.describe(), "installer": installer}

    def finish(error: str | None) -> str | None:
        if error is None:
            environment.commit({**state, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "seconds": round(time.monotonic() - run.started, 1)})
            return None
        shutil.rmtree(environment.staging, ignore_errors=True)
        output = "\n".join(run.lines)
        if environment.log.exists():
            output = environment.log.read_text(encoding="utf-8", errors="replace")
        return advice(error, output, environment, indexes, build.kind)

    run = SetupRun(steps, env=env, log_path=environment.log, finish=finish)
    return run.start()
