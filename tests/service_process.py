"""A real `python -m backend serve` process driven over its pipes, for the service tests.

Deliberately not the add-on's client: these tests check the raw protocol, including what a client
would never send. Every stdout line is parsed as it arrives; a line that is not a JSON object is
recorded in `bad_lines` (the tests assert that it stays empty: stdout is protocol lines only), and
`heartbeat` events (sent on a clock, not in answer to anything) in `heartbeats`.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import ROOT

GUARD_S = 180.0  # only against a hung test; nothing here measures time
FINAL = ("result", "error", "cancelled")


class ServiceProcess:
    def __init__(self, tmp: Path, *args: str, preexec_fn=None, env: dict | None = None, wrap: tuple[str, ...] = ()):
        """`env`: more environment variables; `wrap`: a command the service's command line is appended to."""
        self.log_dir = tmp / "logs"
        self.stderr_path = tmp / "stderr.txt"
        env = dict(os.environ, TEXTURE_VARIANTS_LOG_DIR=str(self.log_dir), PYTHONPATH=str(ROOT), **(env or {}))
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen([*wrap, sys.executable, "-m", "backend", "serve", *args], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      preexec_fn=preexec_fn)
        self.events: queue.Queue = queue.Queue()
        self.bad_lines: list[bytes] = []
        self.heartbeats: list[dict] = []  # `heartbeat` events, left out of `events` and `lines`
        self.lines = 0
        self.longest_line = 0  # bytes, newline included
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            try:
                event = json.loads(line)
                assert isinstance(event, dict) and "type" in event and "id" in event
            except (ValueError, AssertionError):
                self.bad_lines.append(line)
                continue
            if event["type"] == "heartbeat" and event["id"] is None:  # on a clock, not an answer: counted apart
                self.heartbeats.append(event)
                continue
            self.lines += 1
            self.longest_line = max(self.longest_line, len(line))
            self.events.put(event)
        self.events.put(None)  # end of file

    def send_line(self, data: bytes) -> None:
        self.popen.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.popen.stdin.flush()

    def send(self, type: str, **fields) -> str:
        request_id = f"t{next(self._ids)}"
        self.send_line(json.dumps({"id": request_id, "type": type, **fields}).encode())
        return request_id

    def next_event(self, timeout: float = GUARD_S) -> dict | None:
        return self.events.get(timeout=timeout)

    def ask(self, type: str, **fields) -> dict:
        """Send a request and return its answer (for requests answered by one event)."""
        request_id = self.send(type, **fields)
        return self.until(lambda e: e["id"] == request_id)[-1]

    def until(self, predicate, timeout: float = GUARD_S) -> list[dict]:
        """All events up to and including the first that matches."""
        seen = []
        while True:
            event = self.next_event(timeout)
            assert event is not None, f"service ended early; stderr:\n{self.stderr_tail()}"
            seen.append(event)
            if predicate(event):
                return seen

    def job_events(self, job_id: str) -> list[dict]:
        """The job's events up to its final one (other events are dropped)."""
        events = self.until(lambda e: e["id"] == job_id and e["type"] in FINAL)
        return [e for e in events if e["id"] == job_id]

    def close_stdin(self) -> None:
        self.popen.stdin.close()

    def wait(self, timeout: float = GUARD_S) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(timeout)
        self._stderr.close()
        return code

    def stop(self) -> int:
        if self.popen.poll() is None:
            try:
                self.send("shutdown")
                self.close_stdin()
            except (BrokenPipeError, OSError, ValueError):
                pass
        try:
            return self.wait(60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.wait()

    def rss_mb(self) -> float:
        """Resident memory of the service process, read from outside (Linux /proc)."""
        with open(f"/proc/{self.popen.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def stderr_tail(self, n: int = 30) -> str:
        self._stderr.flush()
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])


class LineSink:
    """The stdout of an in-process `Service`: the lines it wrote, in order (no subprocess)."""

    def __init__(self):
        self.lines: list[bytes] = []

    def write(self, data) -> int:
        self.lines.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def tiny_model_service(tmp: Path, tiny_models: dict, *args: str):
    """A module's service on the tiny models (a fixture's generator): it must stop cleanly (exit 0)
    having written protocol lines only."""
    proc = ServiceProcess(tmp, "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]),
                          *args)
    yield proc
    assert proc.stop() == 0, proc.stderr_tail()
    assert proc.bad_lines == []


def can_mount_tmpfs() -> bool:
    """Whether `unshare -m` may mount a tmpfs here (root in a Linux container): the tests that give the
    service a folder of its own (a small disk, a hidden client folder) need it."""
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def tmpfs_wrap(folder: Path, options: str) -> tuple[str, ...]:
    """A `wrap` for ServiceProcess: the service runs with a tmpfs of its own (`mount -o options`, e.g.
    "size=1m") on `folder`, made here if missing; seen from outside through /proc/<pid>/root."""
    import shlex

    folder.mkdir(exist_ok=True)
    return ("unshare", "-m", "sh", "-c", f"mount -t tmpfs -o {options} none {shlex.quote(str(folder))} && exec \"$@\"",
            "sh")
