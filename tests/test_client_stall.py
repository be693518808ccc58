"""A backend that stops reading never blocks the client (docs/PROTOCOL.md, "Promises"): the real service
is stopped with SIGSTOP mid-upload or right after hello, and `generate`, `cancel` and `stop` must
return in their bounded time while the process group is ended."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config
from blender_addon.connection.session import Session
from blender_addon.errors import UserError
from tests.conftest import ROOT

REMOTE = f"{sys.executable} -m backend serve --remote"


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """About 8.7 MB of noise: more than the pipe and the client's write buffer hold together."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1700, 1700, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    client = BackendClient(resolve_config(python=sys.executable, command=REMOTE, environ={}), backend_root=ROOT,
                           log=lambda line: None)
    client.stall_timeout = 2.0
    yield client
    pid = client.pid
    client.stop(timeout=1)
    if pid is not None:
        _resume_and_kill(pid)


def _resume_and_kill(pid: int) -> None:
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return


def _group_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class Call:
    """`fn()` on a thread: its outcome and how long it took."""

    def __init__(self, fn):
        self.result = self.error = None
        self.took: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self.result = fn()
        except UserError as e:
            self.error = e
        self.took = time.monotonic() - self._started

    def join(self, timeout: float) -> Call:
        self._thread.join(timeout)
        return self


def _wait_for_part(workspace: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in (workspace / "uploads").rglob("*.part")):
            return
        time.sleep(0.01)
    raise AssertionError("the upload never began")


def test_a_backend_stopped_mid_upload_is_ended_and_reported_as_stalled(client, big_png, tmp_path):
    client.start()
    pid, workspace = client.pid, Path(client.hello["filesystem"]["workspace"])
    sending = Call(lambda: client.generate(big_png, tmp_path / "job", engine="patch", size=64))
    _wait_for_part(workspace)
    os.kill(pid, signal.SIGSTOP)
    cancelling = Call(lambda: client.cancel("generate-1")).join(5)
    assert cancelling.took is not None and cancelling.took <= 1.0

    sending.join(client.stall_timeout + 10)
    assert sending.took is not None, "generate() still blocked"
    assert sending.error is not None and sending.error.code == "backend_stalled", sending.error
    assert sending.took <= client.stall_timeout + 3
    assert _group_gone(pid, 3)
    assert not client.alive
    hint_events = [e for e in client.poll() if e.get("code") == "backend_stalled"]
    assert hint_events and "ssh keepalives" in hint_events[0]["hint"]


def test_cancel_and_stop_return_in_time_while_the_backend_is_stopped(client, big_png, tmp_path):
    client.stall_timeout = 600.0  # only stop() may end it here
    client.start()
    pid, workspace = client.pid, Path(client.hello["filesystem"]["workspace"])
    os.kill(pid, signal.SIGSTOP)
    sending = Call(lambda: client.generate(big_png, tmp_path / "job", engine="patch", size=64))
    time.sleep(0.5)  # generate() now waits for the upload's first answer

    cancelling = Call(lambda: client.cancel("generate-1")).join(5)
    assert cancelling.took is not None and cancelling.took <= 1.0
    stopping = Call(lambda: client.stop(timeout=1)).join(10)
    assert stopping.took is not None and stopping.took <= 1 + 2 + 0.5, stopping.took
    sending.join(5)
    assert sending.error is not None and sending.error.code == "cancelled", sending.error
    assert _group_gone(pid, 1)
    assert not workspace.exists()  # SIGCONT after SIGTERM: the service cleaned up on its way out


def test_cancel_during_an_upload_ends_it_between_chunks_and_the_backend_goes_on(client, big_png, tmp_path,
                                                                                 color_texture_path):
    session = Session(lambda config, backend_root: client)
    session.start(None, str(ROOT))
    workspace = Path(client.hello["filesystem"]["workspace"])
    slow_send = client._send

    def paced(conn, message, **how):  # a slow link: the upload takes seconds, so Cancel lands inside it
        if how.get("bulk"):
            time.sleep(0.05)
        return slow_send(conn, message, **how)

    client._send = paced
    job = session.submit(None, str(ROOT), str(big_png), str(tmp_path / "job"), {"engine": "patch", "size": 64},
                         in_thread=True)
    _wait_for_part(workspace)
    clicked = time.monotonic()
    session.cancel()
    deadline = time.monotonic() + 5
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.state == "cancelled" and time.monotonic() - clicked < 1.0
    client._send = slow_send
    follow = client.generate(color_texture_path, tmp_path / "next", engine="patch", size=64, seed=1)
    assert client.wait(follow, timeout=120)["type"] == "result"


def test_a_time_out_counts_from_the_click_the_backends_start_included(tmp_path, color_texture_path, monkeypatch):
    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    slow_start = f"sh -c 'sleep 3; exec {sys.executable} -m backend serve \"$@\"' sh"
    client = BackendClient(resolve_config(python=sys.executable, command=slow_start, environ={}), backend_root=ROOT,
                           log=lambda line: None)
    session = Session(lambda config, backend_root: client)
    cancelled_at = []
    cancel = session.cancel
    session.cancel = lambda: (cancelled_at.append(time.monotonic()), cancel())
    try:
        clicked = time.monotonic()
        job = session.submit(None, str(ROOT), str(color_texture_path), str(tmp_path / "job"),
                             {"engine": "patch", "size": 2048, "variants": 16, "seed": 1})
        submitted = time.monotonic() - clicked
        assert submitted > 3  # the start was part of it
        session.run_to_end(timeout=4)
    finally:
        client.stop(timeout=2)
    assert job.state == "cancelled"
    # Cancelled 4 s after the click, or at once when the start alone took longer (not start + 4 s).
    assert 4 <= cancelled_at[0] - clicked < max(4, submitted) + 0.5, (cancelled_at[0] - clicked, submitted)
