"""Runs the set-up plan (plan.Step) in a worker thread, with progress, cancel and a log file.

Plain Python (no bpy): the preferences' modal operator polls the fields from the main thread. Every
command and every line it prints goes to the log file, which error messages point to.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .plan import Step

CANCELLED = "cancelled"

# What pip and uv print about the package they are working on (and its size when downloading).
_DOWNLOAD = re.compile(r"^\s*Downloading\s+(?:https?://\S+/)?(\S+?)\s+\(([\d.]+\s*[kKMG]i?B)\)")
_PACKAGE = re.compile(r"^\s*(?:Collecting|Processing|Building wheel for|Preparing metadata)\s+(?:\S+/)?(\S+)")
_INSTALLING = re.compile(r"^\s*Installing collected packages:\s*(.+)")
_UV_SUMMARY = re.compile(r"^\s*(Resolved|Prepared|Installed|Audited) (\d+ packages?)")


def size_in_bytes(text: str) -> int:
    """'191.8 MB' or '182.4MiB' -> bytes."""
    number, unit, binary = re.match(r"([\d.]+)\s*([kKMG])(i?)", text).groups()
    return int(float(number) * (1024 if binary else 1000) ** ("KMG".index(unit.upper()) + 1))


class SetupRun:
    """Runs the steps one after another in a worker thread; poll its fields from the main thread.

    finish: called in the worker with the outcome (None or the error) once the steps are over; what
    it returns is the final error (it moves the new environment into place, or cleans up).
    """

    def __init__(self, steps: list[Step], env: dict | None = None, log_path: str | os.PathLike | None = None,
                 finish: Callable[[str | None], str | None] | None = None):
        self.steps = list(steps)
        self.index = 0  # the step running now (== len(steps) when all succeeded)
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.package = ""  # what the installer is working on now
        self.downloaded = 0  # bytes of the downloads the installer announced
        self.error: str | None = None
        self.finished = False
        self.started = time.monotonic()
        self.log_path = Path(log_path) if log_path else None
        self._env = dict(os.environ if env is None else env)
        self._finish = finish
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

    def progress_text(self) -> str:
        """'Step 2 of 5: Installing torch · torch-2.13.0…whl · 191.8 MB downloaded'."""
        number = min(self.index + 1, len(self.steps))
        parts = [f"Step {number} of {len(self.steps)}: {self.label}"]
        if self.package:
            parts.append(self.package)
        if self.downloaded:
            parts.append(f"{self.downloaded / 1e6:.1f} MB downloaded")
        return " · ".join(parts)

    def cancel(self) -> None:
        self._cancelled.set()
        process = self._process
        if process and process.poll() is None:
            if sys.platform == "win32":
                process.terminate()
                return
            try:  # the whole group: uv and pip may run helpers of their own
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _note(self, line: str, log) -> None:
        line = line.rstrip()
        if log:
            log.write(line + "\n")
            log.flush()
        if not line.strip():
            return
        self.lines.append(line)
        if m := _DOWNLOAD.match(line):
            self.package = f"{m.group(1)} ({m.group(2)})"
            self.downloaded += size_in_bytes(m.group(2))
        elif m := _PACKAGE.match(line) or _UV_SUMMARY.match(line):
            self.package = " ".join(m.groups())
        elif m := _INSTALLING.match(line):
            self.package = f"installing {len(m.group(1).split(','))} packages"

    def _step(self, step: Step, log) -> int:
        self._note(f"$ {shlex.join(step.argv)}", log)
        self.package = ""
        self._process = subprocess.Popen(
            step.argv, cwd=step.cwd, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=sys.platform != "win32",
        )
        output = []
        for line in self._process.stdout:
            output.append(line)
            self._note(line, log)
        code = self._process.wait()
        if code == 0 and step.env_from_output:
            self._env.update(step.env_from_output("".join(output)))
        return code

    def _steps(self, log) -> str | None:
        """Runs the steps; the error, or None when all succeeded."""
        index = 0
        while index < len(self.steps):
            self.index, step = index, self.steps[index]
            if self.cancelled:
                return CANCELLED
            code = self._step(step, log)
            if self.cancelled:
                return CANCELLED
            if code != 0 and step.fallback:
                self._note(f"{step.label} failed (exit code {code}); going on without it", log)
                self.steps[index + 1:] = step.fallback
            elif code != 0:
                return f"{step.label} failed (exit code {code}): {self.last_line}"
            index += 1
        self.index = len(self.steps)
        return None

    def _run(self) -> None:
        log = None
        try:
            if self.log_path:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(self.log_path, "w", encoding="utf-8")
            error = self._steps(log)
        except OSError as e:
            error = f"{self.label} failed: {e}"
        try:
            self.error = self._finish(error) if self._finish else error
        except OSError as e:
            self.error = f"{error + '; ' if error else ''}finishing the set-up failed: {e}"
        if log:
            log.write(f"== {self.error or 'set-up finished'} after {time.monotonic() - self.started:.0f} s\n")
            log.close()
        self.finished = True


class Current:
    """The set-up running in this Blender (one at a time) and the last one's error: Set up Backend sets
    them, the preferences' set-up box shows them."""

    run: SetupRun | None = None
    last_error = ""
