"""The add-on's connection to the backend: one client, at most one running job.

Plain Python (no bpy), unit-tested against the real backend service. The UI drives it two ways:
`pump()` from a modal operator's timer (never blocks), or `run_to_end()` in background mode
(`blender -b`, where timers and modal operators never run) for scripts and render farms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import UserError
from .job import JobTracker


class Session:
    def __init__(self, client_factory: Callable | None = None):
        if client_factory is None:
            from .client import BackendClient

            client_factory = BackendClient
        self._client_factory = client_factory
        self._client = None
        self._key = None
        self._lock = threading.Lock()
        self.job: JobTracker | None = None
        self.hello: dict | None = None
        self.replies: dict[str, dict] = {}  # answers to other requests (status), by request id

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def client(self, config, backend_root: str):
        """The client for these settings; a new one (the old one stopped) when they changed."""
        key = (repr(config), str(backend_root))
        with self._lock:
            if self._client is None or key != self._key:
                self._stop_client()
                self._client = self._client_factory(config, backend_root=str(backend_root))
                self._key, self.hello = key, None
            return self._client

    def start(self, config, backend_root: str) -> dict:
        """Start the backend if needed and return its hello (version, engines, device)."""
        try:
            self.hello = self.client(config, backend_root).start()
        except Exception as e:
            raise UserError.from_exception(e) from e
        return self.hello

    def start_in_background(self, config, backend_root: str) -> Starting:
        """Start the backend on a worker thread (the UI never waits for its hello); poll the result."""
        client = self.client(config, backend_root)
        starting = Starting(client)

        def run():
            try:
                self.hello = client.start()
            except Exception as e:
                starting.error = UserError.from_exception(e)
            finally:
                starting.done = True

        threading.Thread(target=run, name="texture-variants-start", daemon=True).start()
        return starting

    def submit(self, config, backend_root: str, input_path: str, job_folder: str, params: dict, *,
               in_thread: bool = False, request: str = "generate") -> JobTracker:
        """Send a generate (or a `request` "restyle" or "make_tileable") job that fills `job_folder` (the backend writes the variants into it). With `in_thread`, starting the backend (about a second on a cold start)
        and sending happen on a worker thread, so the caller (the UI) never waits; the job stays
        QUEUED until then, and a failure to start ends it as FAILED."""
        if self.busy:
            raise UserError("busy", "A variant is already being generated",
                            "wait for it to finish, or press Cancel in the Variants panel")
        client = self.client(config, backend_root)
        job = JobTracker(id="", folder=str(job_folder))

        def send():
            try:
                if self.hello is None:
                    self.hello = client.start()
                job.id = client.job(request, input_path, job_folder, should_cancel=lambda: job.cancel_requested,
                                    **params)
                if job.cancel_requested:  # Cancel was pressed while the backend was starting
                    client.cancel(job.id)
            except Exception as e:
                error = UserError.from_exception(e)
                if error.code == "cancelled":  # Cancel was pressed during the upload
                    job.apply({"type": "cancelled", "id": job.id})
                    return
                job.apply(error.event(job.id))
                if not in_thread:
                    raise error from e

        self.job = job
        if in_thread:
            threading.Thread(target=send, name="texture-variants-submit", daemon=True).start()
        else:
            try:
                send()
            except UserError:
                self.job = None
                raise
        return job

    def pump(self) -> bool:
        """Apply the events that arrived since the last call; True when the job changed."""
        if self._client is None or (self.job is not None and not self.job.id):
            return False  # a job not sent yet: its events wait in the client's queue
        changed = False
        for event in self._client.poll():
            if self.job is not None and self.job.concerns(event):
                changed |= self.job.apply(event)
            elif event.get("id") and event.get("type") not in ("accepted", "progress", "result", "cancelled"):
                self.replies[event["id"]] = event
        return changed

    def request_status(self) -> str:
        """Ask the backend for its status (device, loaded models, queue); the answer lands in `replies`."""
        try:
            return self._client.request("status")
        except Exception as e:
            raise UserError.from_exception(e) from e

    def device_known(self) -> bool:
        return bool(self.hello and self.hello.get("device"))

    def note_status(self, reply: dict) -> None:
        """Fold a status answer into the hello (the device is found after hello, while torch loads)."""
        if self.hello is not None:
            for key in ("device", "device_detail", "torch"):
                if reply.get(key) is not None:
                    self.hello[key] = reply[key]

    def run_to_end(self, timeout: float | None = None) -> JobTracker:
        """Block until the job ends; `timeout` s after the job was made (the backend's start included)
        it is cancelled (and reported so)."""
        job = self.job
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - job.created))
        try:
            wait_or_cancel(self._client, job, timeout, self.cancel)
        except Exception as e:
            raise UserError.from_exception(e) from e
        return job

    def cancel(self) -> None:
        if self.busy and self._client is not None:
            self.job.cancel_requested = True
            for job_id in self.job.sent_ids():  # a job not sent yet is cancelled by its sender
                self._client.cancel(job_id)

    def _stop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.stop()
            finally:
                self._client = None

    def stop(self) -> None:
        """Stop the backend process (on unregister, or when Blender quits)."""
        with self._lock:
            self._stop_client()
        self.job = None


def wait_or_cancel(client, job: JobTracker, timeout: float | None, cancel: Callable[[], None]) -> None:
    """Fold the job's events into it until it ends; past `timeout` s call `cancel` and wait for the
    cancelled event (at most 30 s more)."""
    try:
        job.apply(client.wait(job.id, timeout=timeout, on_event=job.apply))
    except UserError as e:
        if e.code != "timeout":
            raise
        cancel()
        job.apply(client.wait(job.id, timeout=30, on_event=job.apply))


class Starting:
    """A backend start in progress (Session.start_in_background): `done`, then `error` or the session's hello."""

    def __init__(self, client):
        self.client = client
        self.done = False
        self.error: UserError | None = None

    def abort(self) -> None:
        """Stop waiting: the process is killed, the start ends with an error (never blocks)."""
        self.client.abort()


_shared: Session | None = None


def shared() -> Session:
    """The add-on's one session (created on first use, so registering starts no process)."""
    global _shared
    if _shared is None:
        _shared = Session()
    return _shared


def shutdown() -> None:
    """Stop the backend and forget the session (unregister)."""
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None
