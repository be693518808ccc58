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

Nothing waits on the process: lines are queued for its writer thread, and the start's lock is never
held while sending or uploading, so `cancel` returns at once and `stop` within its timeout plus the
group's grace. A backend that reads nothing for `stall_timeout` s, or whose heartbeats stop for
`heartbeat_timeout` s, is ended (`backend_stalled`). After `stop()` only a new job or `start()` starts
a backend again (other requests raise `stopped`).
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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from . import config as backend_config
from . import start_failure, transfer
from .config import BackendConfig
from .inbox import FINAL_EVENTS, Inbox
from .process import MAX_EVENT_LINE, STALL_S, BackendProcess

PROTOCOL_VERSION = 2
HELLO_TIMEOUT_S = 60.0  # a cold start on a slow disk; hello itself does not load models
HEARTBEAT_TIMEOUT_S = 30.0  # silence (no event, no heartbeat) this long ends a service that sends heartbeats
JOB_REQUESTS = ("generate", "restyle", "upscale", "make_tileable")  # the requests that start a stopped backend

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
    closed: bool = False  # stop() was called: uploads end, nothing more is sent
    death: dict | None = None  # the end report once the process died
    unsent_logged: bool = False  # a request that could not be sent is logged once, not per request
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def waiter(self, request_id: str) -> queue.Queue:
        """The queue of a request's answers; opened after the process died, it holds that death already."""
        with self._lock:
            answers = self.waiters.setdefault(request_id, queue.Queue())
            if self.death is not None:
                answers.put(self.death | {"id": None})
        return answers

    def died(self, report: dict) -> None:
        """Tell every open waiter, and each one opened from now on, that the process died."""
        with self._lock:
            self.death = report
            waiting = list(self.waiters.values())
        for answers in waiting:
            answers.put(report | {"id": None})


class BackendClient:
    def __init__(self, config: BackendConfig, *, backend_root: str | os.PathLike | None = None, log=None):
        self.config = config
        self.backend_root = Path(backend_root) if backend_root else backend_config.default_backend_root()
        self._log = log or _default_logger.info
        self._lock = threading.RLock()  # one start at a time; never held while sending (the writer serialises)
        self._inbox = Inbox()
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self.hello: dict | None = None
        self.probe_dir = tempfile.gettempdir()  # where hello's probe file goes (docs/PROTOCOL.md, hello)
        self.download_chunk_bytes = transfer.CHUNK_BYTES
        self.stall_timeout = STALL_S  # a backend that reads nothing this long is ended (backend_stalled)
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT_S  # and one that sends nothing this long (at least 3 heartbeats)
        self._stopped = False  # stop() was called: only start() or a new job starts a backend again

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
        self._stopped = False
        return self._start()

    def _start(self) -> dict:
        with self._lock:
            if self.alive and self.hello is not None:
                return self.hello
            if self._stopped:  # a request that waited for this lock while stop() ran
                raise UserError("stopped", "the backend was stopped", "start a job (or Check Backend) to start it again")
            self._discard_connection()
            self._forget_idle_deaths()
            conn = _Connection()
            hello_id = f"hello-{next(self._ids)}"
            conn.waiters[hello_id] = queue.Queue()  # before the process starts: a quick death answers it
            self._spawn(conn)
            try:
                if self._stopped:  # stop() ran before this process was the client's: it would outlive it
                    raise UserError("stopped", "the backend was stopped", "start a job to start it again")
                self.hello = self._hello(conn, hello_id)
            except BaseException:
                self._close(conn, timeout=2)
                raise
            return self.hello

    def abort(self) -> None:
        """Kill the process now (a start in progress fails with backend_died): a Cancel that never blocks."""
        conn = self._conn
        if conn is not None and conn.process is not None and conn.process.popen.poll() is None:
            conn.process.popen.kill()

    def stop(self, timeout: float = 5) -> None:
        """Shut the service down, its whole group by force after `timeout` s; a start or upload under way fails."""
        self._stopped = True
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
        conn = self._started(restart=type in JOB_REQUESTS)
        request_id = f"{type}-{next(self._ids)}"
        if type in ("generate", "restyle"):
            conn.pending.add(request_id)
        self._send(conn, {"id": request_id, "type": type, **fields})
        return request_id

    def _started(self, restart: bool) -> _Connection:
        """The running connection, started if need be (after stop() only with `restart`: a new job)."""
        if restart:
            self._stopped = False
        with self._lock:
            if not self.alive:
                self._start()
            return self._conn

    def generate(self, input_path, output_dir, *, should_cancel=None, **params) -> str:
        """Queue a generate job writing into the job folder `output_dir`; returns its id.

        Parameters left at None take the backend's defaults. A backend that does not share this machine's
        files gets the input uploaded first (a failed upload raises a UserError, code "cancelled" once
        `should_cancel()`), and the job's result event arrives once its files are in `output_dir`."""
        return self.job("generate", input_path, output_dir, should_cancel=should_cancel, **params)

    def restyle(self, input_path, output_dir, *, should_cancel=None, **params) -> str:
        """Queue a restyle job (docs/guide/restyle-and-sketch.md, "Restyle") like `generate`; its mask image is an input too."""
        return self.job("restyle", input_path, output_dir, should_cancel=should_cancel, **params)

    def job(self, kind: str, input_path, output_dir, *, should_cancel=None, **params) -> str:
        """Queue a job of request type `kind` (generate, restyle, make_tileable) like `generate`."""
        fields = {k: v for k, v in params.items() if v is not None}
        input_path, output_dir = os.path.abspath(os.fspath(input_path)), os.path.abspath(os.fspath(output_dir))
        conn = self._started(restart=True)
        if conn.workspace is None:
            return self.request(kind, input=input_path, output_dir=output_dir, **fields)
        remote_input, fields, uploaded = transfer.upload_inputs(
            input_path, fields, self._channel(conn, should_cancel))
        job_id = f"{kind}-{next(self._ids)}"
        remote_dir = f"{conn.workspace}/jobs/{job_id}"
        conn.pending.add(job_id)
        conn.remote_jobs[job_id] = (Path(output_dir), [remote_dir, *uploaded])
        self._send(conn, {"id": job_id, "type": kind, "input": remote_input, "output_dir": remote_dir, **fields})
        return job_id

    def cancel(self, job_id) -> None:
        """Ask the service to cancel a job (its `cancelled` event follows); never waits; no-op if it is gone."""
        conn = self._conn
        if conn is not None and conn.process is not None and conn.process.running:
            self._send(conn, {"id": f"cancel-{next(self._ids)}", "type": "cancel", "job": job_id})

    # --- events -------------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """Every event received since the last call, oldest first; never blocks."""
        return self._inbox.poll()

    def wait(self, job_id, timeout: float | None = None, on_event=None) -> dict:
        """Block until job `job_id` ends and return its final event (result, error or cancelled).

        `on_event(event)` sees each of the job's events on the way. Events of other requests are
        kept for the next `poll`. Raises a UserError with code "timeout" after `timeout` seconds.
        """
        return self._inbox.wait(job_id, timeout, on_event)

    # --- the connection -----------------------------------------------------------------------

    def _spawn(self, conn: _Connection) -> None:
        backend_config.check(self.config, self.backend_root)
        try:
            conn.process = BackendProcess(
                self.config.command(), cwd=str(self.backend_root), env=backend_config.process_env(self.backend_root),
                on_line=lambda line: self._on_line(conn, line), on_overlong=self._on_overlong,
                on_end=lambda process: self._on_end(conn, process), log=self._log, stall_s=self.stall_timeout)
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
        if event.get("type") == "error" and event.get("code") == "backend_died":
            raise start_failure.classify(self.config, event)
        if event.get("type") == "error":
            raise UserError(event.get("code", "internal"), event.get("message", "hello failed"), event.get("hint", ""))
        if event.get("protocol") != PROTOCOL_VERSION:
            raise UserError(
                "protocol_mismatch",
                f"the backend speaks protocol {event.get('protocol')!r}, this extension speaks {PROTOCOL_VERSION}",
                "update the extension and the backend to the same release "
                "(run 'Set up backend' in the add-on preferences)")
        filesystem = event.get("filesystem") or {"shared": True}
        conn.workspace = None if filesystem.get("shared") else filesystem.get("workspace")
        interval = event.get("heartbeat_s")
        if isinstance(interval, (int, float)) and interval > 0:  # silence means a hung link (a hung link's
            conn.process.quiet_limit = max(self.heartbeat_timeout, 3 * interval)  # writes may never block)
        return event

    def _send(self, conn: _Connection, message: dict, **how) -> bool:
        """Queue one line for the process (`how`: `Writer.put`'s options); False when it will not be sent."""
        if conn.closed:
            return False
        if conn.process.send((json.dumps(message, ensure_ascii=True) + "\n").encode(), **how):
            return True
        if not (how.get("bulk") or conn.unsent_logged):  # its end is reported (to this request's waiter too)
            conn.unsent_logged = True
            self._log("backend: could not send a request, the process is gone")
        return False

    # --- what the process says (on its reader thread) -----------------------------------------

    def _on_line(self, conn: _Connection, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self._log(f"backend: ignored a non-JSON line on stdout: {line[:200]!r}")
            return
        if not isinstance(event, dict) or event.get("type") == "heartbeat":  # a heartbeat's arrival is its message
            return
        request_id = event.get("id")
        if request_id in conn.remote_jobs and not self._remote_job_event(conn, event):
            return
        if event.get("type") in FINAL_EVENTS:
            conn.pending.discard(request_id)
        (conn.waiters.get(request_id) or self._inbox).put(event)

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
        final = transfer.fetch_result(result, folder, self._channel(conn), self.download_chunk_bytes, self._log)
        self._release(conn, remote)
        self._inbox.put(final)

    def _release(self, conn: _Connection, remote: list[str]) -> None:
        """Ask the backend to delete an ended remote job's files (docs/PROTOCOL.md, `release`)."""
        if remote and conn.process.running and "release" in (self.hello or {}).get("requests", ()):
            for problem in transfer.release(remote, self._channel(conn)):
                self._log(f"backend: {problem}")

    def _channel(self, conn: _Connection, should_cancel=None) -> transfer.Channel:
        def cancelled() -> bool:
            return conn.closed or (should_cancel is not None and bool(should_cancel()))

        def send(message: dict, bulk: bool = False) -> bool:
            sent = self._send(conn, message, bulk=bulk, cancelled=cancelled if bulk else None)
            if sent or not bulk:
                return sent
            if cancelled():
                raise UserError("cancelled", "the upload was cancelled", "")
            conn.process.join(1)  # why it ended is known once the reader has finished
            report = conn.process.end_report()
            raise UserError(report["code"], f"during an upload, {report['message']}", report["hint"])

        return transfer.Channel(send=send, open=conn.waiter, close=lambda i: conn.waiters.pop(i, None),
                                new_id=lambda kind: f"{kind}-{next(self._ids)}", cancelled=cancelled)

    def _on_overlong(self) -> None:
        self._log(f"backend: skipped a stdout line over {MAX_EVENT_LINE} bytes")
        self._inbox.put({"type": "error", "id": None, "code": "protocol_error",
                          "message": f"the backend sent a line over {MAX_EVENT_LINE} bytes; it was skipped",
                          "hint": "a bug in the backend: see its log; the client keeps reading"})

    def _on_end(self, conn: _Connection, process: BackendProcess) -> None:
        base = {"type": "error", **process.end_report()}
        self._log(f"backend process {process.pid}: {base['message']}")
        conn.died(base)  # a start() waiting for hello raises it; a transfer waiting for an answer too
        ids = sorted(conn.pending) or ([] if conn.waiters else [None])
        conn.pending.clear()
        for request_id in ids:
            self._inbox.put(base | {"id": request_id})

    # --- ending -------------------------------------------------------------------------------

    def _close(self, conn: _Connection, timeout: float) -> None:
        if conn.process.running and not conn.closed:
            request_id = f"shutdown-{next(self._ids)}"
            conn.waiters[request_id] = queue.Queue()  # its ack is the client's business, not the caller's
            self._send(conn, {"id": request_id, "type": "shutdown"})
        conn.closed = True
        conn.process.close(timeout)
        for waiter in list(conn.waiters.values()):  # a start, transfer or download waiting on it ends now
            waiter.put({"type": "error", "id": None, "code": "cancelled", "message": "the backend was stopped",
                        "hint": "start the job again"})

    def _forget_idle_deaths(self) -> None:
        """Drop unpolled reports of a death while idle (a fresh service replaces it); a job's are kept."""
        self._inbox.forget(lambda event: event.get("code") == "backend_died" and event.get("id") is None)

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
