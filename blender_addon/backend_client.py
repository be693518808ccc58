"""Client of the backend service (`python -m backend serve`): standard library only.

Used by the Blender extension and unit-tested outside Blender (no bpy, no torch here). It starts the
service under the configured interpreter, says hello and checks the protocol version, reads events
on a thread into a queue that the caller drains without blocking (`poll`), and notices within a
fraction of a second when the process dies (its stdout reaches end of file; a watchdog also polls
the exit status), reporting it as an `error` event with code `backend_died`. The next request starts
a fresh service. The protocol is documented in docs/PROTOCOL.md.

Interface (agreed with the add-on):

    config = resolve_config(python=..., base=..., ip_adapter=..., device=...)   # env vars win
    client = BackendClient(config, backend_root=folder_containing_backend_package)
    hello = client.start()                  # {"protocol", "version", "engines", "models", "device", ...}
    job = client.generate("/abs/in.png", "/abs/out", engine="patch", variants=2, seed=1)
    events = client.poll()                  # never blocks
    final = client.wait(job, timeout=60)    # result | error | cancelled event of that job
    client.cancel(job); client.stop()

Additions beyond the agreed interface: `BackendTimeout` (a BackendError that is also a
TimeoutError, raised by `wait` and `start`), `BackendClient.pid`, `BackendClient.hello`, and the
environment variable TEXTURE_VARIANTS_DEVICE beside the three agreed ones.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROTOCOL_VERSION = 2

ENV_PYTHON = "TEXTURE_VARIANTS_PYTHON"
ENV_BASE = "TEXTURE_VARIANTS_BASE"
ENV_IP_ADAPTER = "TEXTURE_VARIANTS_IP_ADAPTER"
ENV_DEVICE = "TEXTURE_VARIANTS_DEVICE"

FINAL_EVENTS = ("result", "error", "cancelled")
HELLO_TIMEOUT_S = 60.0  # a cold start on a slow disk; hello itself does not load models
WATCHDOG_INTERVAL_S = 0.1  # how often the exit status is polled (end of file usually comes first)
STDERR_TAIL_LINES = 40

_default_logger = logging.getLogger("texture_variants.backend")


class BackendError(Exception):
    """Something the user should see: a stable `code`, a `message`, and a `hint` saying what to do.

    Codes raised by the client itself: "not_set_up" (no usable interpreter or backend folder),
    "backend_died" (the process ended during start), "protocol_mismatch", "timeout"; any error code
    of the service (docs/PROTOCOL.md) can also arrive this way from `start`.
    """

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BackendTimeout(BackendError, TimeoutError):
    def __init__(self, message: str, hint: str = ""):
        super().__init__("timeout", message, hint)


@dataclass(frozen=True)
class BackendConfig:
    python: str | None = None  # the backend's interpreter (a venv with torch), not Blender's
    base: str | None = None  # default SD1.5 model: hub id, folder or checkpoint
    ip_adapter: str | None = None  # default IP-Adapter: hub id or folder
    device: str | None = None  # "auto", "cpu", "cuda", "cuda:1", "mps"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "backend", "serve"]
        for flag, value in (("--base", self.base), ("--ip-adapter", self.ip_adapter), ("--device", self.device)):
            if value:
                cmd += [flag, value]
        return cmd


def resolve_config(python=None, base=None, ip_adapter=None, device=None, environ=os.environ) -> BackendConfig:
    """The settings from the arguments, each overridden by its environment variable when that is set.

    The variables win so that a script or a render farm can point a saved .blend at its own
    interpreter and models without touching the user's preferences.
    """

    def pick(name: str, value):
        return environ.get(name) or (str(value) if value not in (None, "") else None)

    return BackendConfig(python=pick(ENV_PYTHON, python), base=pick(ENV_BASE, base),
                         ip_adapter=pick(ENV_IP_ADAPTER, ip_adapter), device=pick(ENV_DEVICE, device))


def default_backend_root() -> Path:
    """The folder that holds the `backend` package: next to this file (the extension zip) or above it (a checkout)."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "backend" / "__init__.py").is_file():
            return folder
    return here


class _Process:
    """One running service process and what the client knows about it."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pending: set[str] = set()  # generate ids without a final event yet
        self.waiters: dict[str, queue.Queue] = {}  # ids whose events the client consumes itself
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stopping = False  # stop() was called: its end is not a death
        self.ended = threading.Event()  # the end was noticed (and reported unless stopping)
        self.end_lock = threading.Lock()
        self.reported = threading.Event()  # the end's events (if any) are in the queue
        self.reader: threading.Thread | None = None
        self.stderr_reader: threading.Thread | None = None


class BackendClient:
    def __init__(self, config: BackendConfig, *, backend_root: str | os.PathLike | None = None, log=None):
        self.config = config
        self.backend_root = Path(backend_root) if backend_root else default_backend_root()
        self._log = log or _default_logger.info
        self._lock = threading.RLock()  # one start/request/stop at a time
        self._send_lock = threading.Lock()
        self._events: queue.Queue = queue.Queue()
        self._held: list[dict] = []  # events wait() read that belong to other requests
        self._held_lock = threading.Lock()  # never held while starting: poll() must not block
        self._ids = itertools.count(1)
        self._proc: _Process | None = None
        self.hello: dict | None = None

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and not proc.ended.is_set() and proc.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.popen.pid if self._proc is not None else None

    def start(self) -> dict:
        """Start the service if it is not running, say hello, check the protocol; return the hello."""
        with self._lock:
            if self.alive and self.hello is not None:
                return self.hello
            self._discard_process()
            self._forget_idle_deaths()
            proc = self._spawn()
            try:
                self.hello = self._hello(proc)
            except BaseException:
                self._terminate(proc, timeout=2)
                raise
            return self.hello

    def stop(self, timeout: float = 5) -> None:
        """Ask the service to shut down; terminate, then kill it if it does not exit in time."""
        with self._lock:
            proc, self._proc, self.hello = self._proc, None, None
            if proc is not None:
                self._terminate(proc, timeout)

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- requests -----------------------------------------------------------------------------

    def request(self, type: str, **fields) -> str:
        """Send a request (starting the service first if it is not running); return its id."""
        with self._lock:
            if not self.alive:
                self.start()
            request_id = f"{type}-{next(self._ids)}"
            if type == "generate":
                self._proc.pending.add(request_id)
            self._send(self._proc, {"id": request_id, "type": type, **fields})
            return request_id

    def generate(self, input_path, output_dir, **params) -> str:
        """Queue a generate job; returns its id. Parameters left at None take the backend's defaults."""
        fields = {k: v for k, v in params.items() if v is not None}
        return self.request("generate", input=os.path.abspath(os.fspath(input_path)),
                            output_dir=os.path.abspath(os.fspath(output_dir)), **fields)

    def cancel(self, job_id) -> None:
        """Ask the service to cancel a job; its `cancelled` event follows. No-op if the service is gone."""
        with self._lock:
            if self.alive:
                self._send(self._proc, {"id": f"cancel-{next(self._ids)}", "type": "cancel", "job": job_id})

    # --- events -------------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """Every event received since the last call, oldest first; never blocks."""
        with self._held_lock:
            events, self._held = self._held, []
        return self._drain_into(events)

    def _drain_into(self, events: list) -> list:
        """Append everything the reader thread has queued so far to `events`; never blocks."""
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, job_id, timeout: float | None = None, on_event=None) -> dict:
        """Block until job `job_id` ends and return its final event (result, error or cancelled).

        `on_event(event)` sees each of the job's events on the way. Events of other requests are
        kept for the next `poll`. Raises BackendTimeout after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._take_held(job_id)
            if event is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BackendTimeout(f"job {job_id} did not finish within {timeout:g} s",
                                         "cancel it, or wait longer")
                try:
                    event = self._events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if event.get("id") != job_id:
                    with self._held_lock:
                        self._held.append(event)
                    continue
            if on_event is not None:
                on_event(event)
            if event.get("type") in FINAL_EVENTS:
                return event

    def _take_held(self, job_id) -> dict | None:
        with self._held_lock:
            for i, event in enumerate(self._held):
                if event.get("id") == job_id:
                    return self._held.pop(i)
        return None

    # --- the process --------------------------------------------------------------------------

    def _spawn(self) -> _Process:
        python = self.config.python
        if not python:
            raise BackendError("not_set_up", "no Python interpreter is configured for the backend",
                               f"set up the backend in the add-on preferences, or set {ENV_PYTHON}")
        if not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise BackendError("not_set_up", f"the backend interpreter {python} does not exist or cannot run",
                               f"run 'Set up backend' in the add-on preferences, or fix {ENV_PYTHON}")
        if not (self.backend_root / "backend" / "__init__.py").is_file():
            raise BackendError("not_set_up", f"no backend package in {self.backend_root}",
                               "reinstall the extension (its zip carries the backend)")
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)  # Blender's Python settings must not leak into the backend's
        env["PYTHONPATH"] = str(self.backend_root)
        env["PYTHONUNBUFFERED"] = "1"
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # Ctrl-C in Blender's terminal is not meant for the backend
        try:
            popen = subprocess.Popen(self.config.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=str(self.backend_root), env=env, **kwargs)
        except OSError as e:
            raise BackendError("not_set_up", f"cannot start the backend with {python}: {e}",
                               "check the interpreter in the add-on preferences") from e
        proc = _Process(popen)
        proc.reader = threading.Thread(target=self._read_events, args=(proc,), name="backend-events", daemon=True)
        proc.reader.start()
        proc.stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), name="backend-stderr",
                                              daemon=True)
        proc.stderr_reader.start()
        threading.Thread(target=self._watch, args=(proc,), name="backend-watchdog", daemon=True).start()
        self._proc = proc
        self._log(f"backend started (pid {popen.pid}): {' '.join(self.config.command())}")
        return proc

    def _hello(self, proc: _Process) -> dict:
        request_id = f"hello-{next(self._ids)}"
        answers: queue.Queue = queue.Queue()
        proc.waiters[request_id] = answers
        try:
            self._send(proc, {"id": request_id, "type": "hello", "protocol": PROTOCOL_VERSION,
                              "client": "texture-variants backend_client"})
            try:
                event = answers.get(timeout=HELLO_TIMEOUT_S)
            except queue.Empty:
                raise BackendTimeout(f"the backend did not answer hello within {HELLO_TIMEOUT_S:g} s",
                                     "see the backend log; the interpreter may be very slow to start") from None
        finally:
            proc.waiters.pop(request_id, None)
        if event.get("type") == "error":
            message = event.get("message", "hello failed")
            if event.get("code") == "backend_died" and event.get("stderr_tail"):
                message += ": " + event["stderr_tail"].splitlines()[-1]
            raise BackendError(event.get("code", "internal"), message, event.get("hint", ""))
        if event.get("protocol") != PROTOCOL_VERSION:
            raise BackendError(
                "protocol_mismatch",
                f"the backend speaks protocol {event.get('protocol')!r}, this extension speaks {PROTOCOL_VERSION}",
                "update the extension and the backend to the same release "
                "(run 'Set up backend' in the add-on preferences)")
        return event

    def _send(self, proc: _Process, message: dict) -> None:
        data = (json.dumps(message, ensure_ascii=True) + "\n").encode()
        with self._send_lock:
            try:
                proc.popen.stdin.write(data)
                proc.popen.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                # The process is dying; the watchdog reports it, including this request if it is a job.
                self._log("backend: could not send a request, the process is gone")

    def _read_events(self, proc: _Process) -> None:
        for line in proc.popen.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self._log(f"backend: ignored a non-JSON line on stdout: {line[:200]!r}")
                continue
            if not isinstance(event, dict):
                continue
            request_id = event.get("id")
            if event.get("type") in FINAL_EVENTS:
                proc.pending.discard(request_id)
            waiter = proc.waiters.get(request_id)
            (waiter or self._events).put(event)
        # End of file: the process closed stdout, which it only does by exiting.
        try:
            proc.popen.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
        self._ended(proc)

    def _read_stderr(self, proc: _Process) -> None:
        for raw in proc.popen.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            proc.stderr_tail.append(line)
            self._log(f"backend: {line}")

    def _watch(self, proc: _Process) -> None:
        """Notices an exit even when end of file does not come (a child process holding the pipe)."""
        while not proc.ended.wait(WATCHDOG_INTERVAL_S):
            if proc.popen.poll() is not None:
                proc.reader.join(0.5)  # let the reader deliver the last events first
                self._ended(proc)

    def _ended(self, proc: _Process) -> None:
        with proc.end_lock:  # once, whichever thread notices first
            if proc.ended.is_set():
                return
            proc.ended.set()
        try:
            if not proc.stopping:
                self._report_death(proc)
        finally:
            proc.reported.set()

    def _report_death(self, proc: _Process) -> None:
        proc.stderr_reader.join(0.5)  # its last words are usually the reason
        code = proc.popen.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        tail = "\n".join(list(proc.stderr_tail)[-10:])
        self._log(f"backend process {proc.popen.pid} {how}")
        base = {"type": "error", "code": "backend_died", "message": f"the backend process {how}",
                "hint": "it is restarted on the next request; its log (stderr tail here) says why",
                "exit_code": code, "stderr_tail": tail}
        for waiter in list(proc.waiters.values()):  # a start() waiting for hello raises it
            waiter.put(base | {"id": None})
        ids = sorted(proc.pending) or ([] if proc.waiters else [None])
        proc.pending.clear()
        for request_id in ids:
            self._events.put(base | {"id": request_id})

    def _terminate(self, proc: _Process, timeout: float) -> None:
        proc.stopping = True
        popen = proc.popen
        if popen.poll() is None:
            request_id = f"shutdown-{next(self._ids)}"
            proc.waiters[request_id] = queue.Queue()  # its ack is the client's business, not the caller's
            self._send(proc, {"id": request_id, "type": "shutdown"})
            try:
                popen.stdin.close()
            except OSError:
                pass
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.terminate()
                try:
                    popen.wait(2)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
        if proc.reader is not None:
            proc.reader.join(1)  # the final events (cancelled jobs) reach the queue
        proc.ended.set()
        proc.reported.set()
        if proc.reader is None or not proc.reader.is_alive():
            popen.stdout.close()

    def _forget_idle_deaths(self) -> None:
        """Drop not yet polled reports of a death while idle: a fresh service replaces that process.

        (A job's death report is kept: its job ended.)
        """
        with self._held_lock:
            events, self._held = self._held, []
            self._drain_into(events)
            for event in events:
                if not (event.get("code") == "backend_died" and event.get("id") is None):
                    self._events.put(event)

    def _discard_process(self) -> None:
        """Forget a dead process (its death was reported); a live one without hello is stopped."""
        proc, self._proc = self._proc, None
        self.hello = None
        if proc is None:
            return
        if proc.ended.is_set():
            proc.reported.wait(2)  # a watchdog may be writing the report right now
        elif proc.popen.poll() is not None:  # died a moment ago: report it before starting anew
            proc.reader.join(0.5)
            self._ended(proc)
        else:
            self._terminate(proc, timeout=2)
