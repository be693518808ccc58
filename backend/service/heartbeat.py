"""The service's heartbeat: a `heartbeat` event every `interval` seconds while it serves.

A client cannot tell a busy service from a link that hangs (an ssh session whose server side is
stopped, a network that drops packets without a reset) by its own writes alone: a hung link may
take a while to block them, and an idle client writes nothing. The heartbeat gives it something to
expect: silence for a few intervals means the link or the service hangs (docs/PROTOCOL.md,
"heartbeat"). It runs on a thread of its own, so a long job does not delay it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backend.service.protocol import event

DEFAULT_HEARTBEAT_S = 5.0


class Heartbeat:
    def __init__(self, emit: Callable[[dict], None], interval: float = DEFAULT_HEARTBEAT_S):
        self.interval = interval  # seconds; 0 sends none
        self._emit = emit
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stopped.wait(self.interval):
            self._emit(event("heartbeat", None, uptime=round(time.monotonic() - started, 1)))
