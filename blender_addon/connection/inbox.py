"""The events the backend client received for its caller. Standard library only.

The process's reader thread `put`s them; the caller drains them without blocking (`poll`) or blocks
for one job's (`wait`), which keeps the other requests' events for the next `poll`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ..errors import UserError

FINAL_EVENTS = ("result", "error", "cancelled")


class Inbox:
    def __init__(self):
        self._events: queue.Queue = queue.Queue()
        self._held: list[dict] = []  # events wait() read that belong to other requests
        self._lock = threading.Lock()  # never held while starting: poll() must not block

    def put(self, event: dict) -> None:
        self._events.put(event)

    def poll(self) -> list[dict]:
        """Every event received since the last call, oldest first; never blocks."""
        with self._lock:
            events, self._held = self._held, []
        return self._drain_into(events)

    def _drain_into(self, events: list) -> list:
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
                    with self._lock:
                        self._held.append(event)
                    continue
            if on_event is not None:
                on_event(event)
            if event.get("type") in FINAL_EVENTS:
                return event

    def _take_held(self, job_id) -> dict | None:
        with self._lock:
            for i, event in enumerate(self._held):
                if event.get("id") == job_id:
                    return self._held.pop(i)
        return None

    def forget(self, obsolete: Callable[[dict], bool]) -> None:
        """Drop the unpolled events that `obsolete` says nobody needs any more."""
        with self._lock:
            events, self._held = self._held, []
            for event in self._drain_into(events):
                if not obsolete(event):
                    self._events.put(event)
