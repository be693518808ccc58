"""Client of the backend service (`python -m backend serve`): requests out, events in. Standard library only.

Used by the Blender extension and unit-tested outside Blender (no bpy, no torch here). It starts the
service (`process`, configured by `config`), says hello and checks the protocol
version, queues the events the process sends for the caller to drain without blocking (`poll`), and
turns the end of a process nobody stopped into an `error` event with code `backend_died`. The next
request starts a fresh service. The protocol is documented in docs/PROTOCOL.md.

    config = resolve_config(python=..., base=..., ip_adapter=..., device=...)   # env vars win
    client = BackendClient(config, backend_root=folder_containing_backend_package)
    hello = client.start()                  # {"protocol", "version", "engines", "models", "device", ...}
    job = client.generate("/abs/in.png", "/abs/job-folder", engine="patch", variants=2, seed=1)
    events = client.poll()                  # never blocks
    final = client.wait(job, timeout=60)    # result | error | cancelled event of that job
    client.cancel(job); client.stop()

Every error it raises is an `errors.UserError` (code, message, hint); `wait` and `start` raise one
with code "timeout" when time runs out.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from . import config as backend_config
from . import transfer
from .config import BackendConfig
from .process import MAX_EVENT_LINE, BackendProcess

PROTOCOL_VERSION = 2

FINAL_EVENTS = ("result", "error", "cancelled")
HELLO_TIMEOUT_S = 60.0  # a cold start on a slow disk; hello itself does not load models

_default_logger = logging.getLogger("texture_variants.backend")


@dataclass
class _Connection:
    """One running process and the requests the client has open on it."""

    process: BackendProcess | None = None
    pending: set[str] = field(default_factory=set)  # generate ids without a final event yet
    waiters: dict[str, queue.Queue] = field(default_factory=dict)  # ids whose events the client consumes
    workspace: str | None = None  # the backend's folder for our files when it does not share ours
    # job id -> (local job folder, the backend's files of the job: its folder and the uploads)
    remote_jobs: dict[str, tuple[Path, list[str]]] = field(default_factory=dict)


class BackendClient:
    def __init__(self, config: BackendConfig, *, backend_root: str | os.PathLike | None = None, log=None):
        self.config = config
        self.backend_root = Path(backend_root) if backend_root else backend_config.default_backend_root()
        self._log = log or _default_logger.info
        self._lock = threading.RLock()  # one start/request/stop at a time (they also serialise stdin)
        self._events: queue.Queue = queue.Queue()
        self._held: list[dict] = []  # events wait() read that belong to other requests
        self._held_lock = threading.Lock()  # never held while starting: poll() must not block
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self.hello: dict | None = None
        self.probe_dir = tempfile.gettempdir()  # where hello's probe file goes (docs/PROTOCOL.md, hello)
        self.download_chunk_bytes = transfer.CHUNK_BYTES

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        conn = self._conn
        return conn is not None and conn.process.running

    @property
    def pid(self) -> int | None:
        conn = self._conn
        return conn.process.pid if conn is not None else None

    def start(self) -> dict:
        """Start the service if it is not running, say hello, check the protocol; return the hello."""
        with self._lock:
            if self.alive and self.hello is not None:
                return self.hello
            self._discard_connection()
            self._forget_idle_deaths()
            conn = _Connection()
            hello_id = f"hello-{next(self._ids)}"
            conn.waiters[hello_id] = queue.Queue()  # before the process starts: a quick death answers it
            self._spawn(conn)
            try:
                self.hello = self._hello(conn, hello_id)
            except BaseException:
                self._close(conn, timeout=2)
                raise
            return self.hello

    def abort(self) -> None:
        """Kill the process now, without waiting for a start() in progress (which then fails with
        backend_died): a Cancel that never blocks. The next request starts a fresh service."""
        conn = self._conn
        if conn is not None and conn.process is not None and conn.process.popen.poll() is None:
            conn.process.popen.kill()

    def stop(self, timeout: float = 5) -> None:
        """Ask the service to shut down; its whole process group ends, by force after `timeout` s."""
        with self._lock:
            conn, self._conn, self.hello = self._conn, None, None
            if conn is not None:
                self._close(conn, timeout)

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
                self._conn.pending.add(request_id)
            self._send(self._conn, {"id": request_id, "type": type, **fields})
            return request_id

    def generate(self, input_path, output_dir, **params) -> str:
        """Queue a generate job writing into the job folder `output_dir`; returns its id.

        Parameters left at None take the backend's defaults. A backend that does not share this
        machine's files gets the input uploaded first (a failed upload raises a UserError), and the
        job's result event arrives once its files are downloaded into `output_dir`."""
        return self._job("generate", input_path, output_dir, params)

    def restyle(self, input_path, output_dir, **params) -> str:
        """Queue a restyle job (the restyle request: README "Restyle"), like `generate`; its mask
        image is an input too."""
        return self._job("restyle", input_path, output_dir, params)

    def _job(self, kind: str, input_path, output_dir, params: dict) -> str:
        fields = {k: v for k, v in params.items() if v is not None}
        input_path, output_dir = os.path.abspath(os.fspath(input_path)), os.path.abspath(os.fspath(output_dir))
        with self._lock:
            if not self.alive:
                self.start()
            conn = self._conn
            if conn.workspace is None:
                return self.request(kind, input=input_path, output_dir=output_dir, **fields)
            remote_input, fields, uploaded = transfer.upload_inputs(input_path, fields, self._channel(conn))
            job_id = f"{kind}-{next(self._ids)}"
            remote_dir = f"{conn.workspace}/jobs/{job_id}"
            conn.pending.add(job_id)
            conn.remote_jobs[job_id] = (Path(output_dir), [remote_dir, *uploaded])
            self._send(conn, {"id": job_id, "type": kind, "input": remote_input, "output_dir": remote_dir, **fields})
            return job_id

    def cancel(self, job_id) -> None:
        """Ask the service to cancel a job; its `cancelled` event follows. No-op if the service is gone."""
        with self._lock:
            if self.alive:
                self._send(self._conn, {"id": f"cancel-{next(self._ids)}", "type": "cancel", "job": job_id})

    # --- events -------------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """Every event received since the last call, oldest first; never blocks."""
        with self._held_lock:
            events, self._held = self._held, []
        return self._drain_into(events)

    def _drain_into(self, events: list) -> list:
        """Append everything queued so far to `events`; never blocks."""
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, job_id, timeout: float | None = None, on_event=None) -> dict:
        """Block until job `job_id` ends and return its final event (result, error or cancelled).

        `on_event(event)` sees each of the job's events on the way. Events of other requests are
        kept for the next `poll`. Raises a UserError with code "timeout" after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._take_held(job_id)
            if event is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise UserError("timeout", f"job {job_id} did not finish within {timeout:g} s",
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

    # --- the connection -----------------------------------------------------------------------

    def _spawn(self, conn: _Connection) -> None:
        backend_config.check(self.config, self.backend_root)
        try:
            conn.process = BackendProcess(
                self.config.command(), cwd=str(self.backend_root), env=backend_config.process_env(self.backend_root),
                on_line=lambda line: self._on_line(conn, line), on_overlong=self._on_overlong,
                on_end=lambda process: self._on_end(conn, process), log=self._log)
        except OSError as e:
            raise UserError("not_set_up", f"cannot start the backend with {self.config.python}: {e}",
                            "check the interpreter in the add-on preferences") from e
        self._conn = conn
        self._log(f"backend started (pid {conn.process.pid}): {' '.join(self.config.command())}")

    def _hello(self, conn: _Connection, request_id: str) -> dict:
        answers = conn.waiters[request_id]
        token = secrets.token_hex(16)
        fd, probe = tempfile.mkstemp(prefix="texture-variants-probe-", dir=self.probe_dir)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        try:
            self._send(conn, {"id": request_id, "type": "hello", "protocol": PROTOCOL_VERSION,
                              "client": "texture-variants backend_client",
                              "probe": {"path": os.path.abspath(probe), "token": token}})
            try:
                event = answers.get(timeout=HELLO_TIMEOUT_S)
            except queue.Empty:
                raise UserError("timeout", f"the backend did not answer hello within {HELLO_TIMEOUT_S:g} s",
                                "see the backend log; the interpreter may be very slow to start") from None
        finally:
            conn.waiters.pop(request_id, None)
            os.unlink(probe)
        if event.get("type") == "error":
            message = event.get("message", "hello failed")
            if event.get("code") == "backend_died" and event.get("stderr_tail"):
                message += ": " + event["stderr_tail"].splitlines()[-1]
            raise UserError(event.get("code", "internal"), message, event.get("hint", ""))
        if event.get("protocol") != PROTOCOL_VERSION:
            raise UserError(
                "protocol_mismatch",
                f"the backend speaks protocol {event.get('protocol')!r}, this extension speaks {PROTOCOL_VERSION}",
                "update the extension and the backend to the same release "
                "(run 'Set up backend' in the add-on preferences)")
        filesystem = event.get("filesystem") or {"shared": True}
        conn.workspace = None if filesystem.get("shared") else filesystem.get("workspace")
        return event

    def _send(self, conn: _Connection, message: dict) -> None:
        """Callers hold self._lock, so lines never interleave."""
        if not conn.process.send((json.dumps(message, ensure_ascii=True) + "\n").encode()):
            # The process is dying; its end is reported, including this request if it is a job.
            self._log("backend: could not send a request, the process is gone")

    # --- what the process says (on its reader thread) -----------------------------------------

    def _on_line(self, conn: _Connection, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self._log(f"backend: ignored a non-JSON line on stdout: {line[:200]!r}")
            return
        if not isinstance(event, dict):
            return
        request_id = event.get("id")
        if request_id in conn.remote_jobs and not self._remote_job_event(conn, event):
            return
        if event.get("type") in FINAL_EVENTS:
            conn.pending.discard(request_id)
        (conn.waiters.get(request_id) or self._events).put(event)

    def _remote_job_event(self, conn: _Connection, event: dict) -> bool:
        """A remote job's event: previews stay on the backend; a result is handed on only after its
        files are downloaded (on a thread of its own). Returns whether to hand the event on now."""
        kind, job_id = event.get("type"), event.get("id")
        event.pop("preview", None)
        if kind in ("error", "cancelled"):
            remote = conn.remote_jobs.pop(job_id)[1]
            threading.Thread(target=self._release, args=(conn, remote), name="backend-release", daemon=True).start()
        if kind != "result":
            return True
        folder, remote = conn.remote_jobs.pop(job_id)
        conn.pending.discard(job_id)  # its final event comes from the download, not from a death report
        threading.Thread(target=self._fetch_result, args=(conn, event, folder, remote), name="backend-download",
                         daemon=True).start()
        return False

    def _fetch_result(self, conn: _Connection, result: dict, folder: Path, remote: list[str]) -> None:
        """Download a remote result, then release the backend's copies; the job's final event is the
        result with local paths, or an error."""
        job_id = result.get("id")

        channel = self._channel(conn)

        def fetch(remote: str) -> Path:
            return transfer.download(remote, folder, channel, chunk_bytes=self.download_chunk_bytes)

        try:
            final = transfer.ResultFetch(folder).run(result, fetch)
        except (UserError, OSError) as e:
            code, message = getattr(e, "code", "bad_output"), getattr(e, "message", str(e))
            self._log(f"backend: job {job_id}: {message}")
            final = {"type": "error", "id": job_id, "job": job_id, "code": code,
                     "message": f"the results could not be brought back: {message}",
                     "hint": "nothing of this job was kept; generate again (the next request reconnects)"}
        self._release(conn, remote)
        self._events.put(final)

    def _release(self, conn: _Connection, remote: list[str]) -> None:
        """Ask the backend to delete an ended remote job's files (docs/PROTOCOL.md, `release`)."""
        if remote and conn.process.running and "release" in (self.hello or {}).get("requests", ()):
            for problem in transfer.release(remote, self._channel(conn)):
                self._log(f"backend: {problem}")

    def _channel(self, conn: _Connection) -> transfer.Channel:
        def send(message: dict) -> None:
            with self._lock:
                self._send(conn, message)

        return transfer.Channel(send=send, open=lambda i: conn.waiters.setdefault(i, queue.Queue()),
                                        close=lambda i: conn.waiters.pop(i, None),
                                        new_id=lambda kind: f"{kind}-{next(self._ids)}")

    def _on_overlong(self) -> None:
        self._log(f"backend: skipped a stdout line over {MAX_EVENT_LINE} bytes")
        self._events.put({"type": "error", "id": None, "code": "protocol_error",
                          "message": f"the backend sent a line over {MAX_EVENT_LINE} bytes; it was skipped",
                          "hint": "a bug in the backend: see its log; the client keeps reading"})

    def _on_end(self, conn: _Connection, process: BackendProcess) -> None:
        code = process.popen.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        tail = "\n".join(list(process.stderr_tail)[-10:])
        self._log(f"backend process {process.pid} {how}")
        base = {"type": "error", "code": "backend_died", "message": f"the backend process {how}",
                "hint": "it is restarted on the next request; its log (stderr tail here) says why",
                "exit_code": code, "stderr_tail": tail}
        for waiter in list(conn.waiters.values()):  # a start() waiting for hello raises it
            waiter.put(base | {"id": None})
        ids = sorted(conn.pending) or ([] if conn.waiters else [None])
        conn.pending.clear()
        for request_id in ids:
            self._events.put(base | {"id": request_id})

    # --- ending -------------------------------------------------------------------------------

    def _close(self, conn: _Connection, timeout: float) -> None:
        if conn.process.running:
            request_id = f"shutdown-{next(self._ids)}"
            conn.waiters[request_id] = queue.Queue()  # its ack is the client's business, not the caller's
            self._send(conn, {"id": request_id, "type": "shutdown"})
        conn.process.close(timeout)

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

    def _discard_connection(self) -> None:
        """Forget a process that ended (after its end is reported); a live one without hello is stopped."""
        conn, self._conn = self._conn, None
        self.hello = None
        if conn is None:
            return
        if conn.process.popen.poll() is None and not conn.process.ended:
            self._close(conn, timeout=2)
        else:
            conn.process.join(2)  # the reader may be reporting the end right now
