"""Supervision of one backend process: started in its own process group, its output read in bounded
chunks on one thread, its end noticed, and the whole group ended on close. Standard library only.

What the process says is handed on as it arrives: `on_line(bytes)` for each stdout line (the
protocol), `on_overlong()` once for each stdout line longer than `MAX_EVENT_LINE` (skipped up to its
newline, so memory stays bounded whatever the process writes), stderr lines to `log` and a short
tail, and `on_end(process)` once when the process ended by itself (not after `close`).
"""

from __future__ import annotations

import collections
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time

MAX_EVENT_LINE = 4 << 20  # the service keeps its events far below this (docs/PROTOCOL.md)
MAX_LOG_LINE = 64 << 10
CHUNK = 64 << 10
TICK_S = 0.1  # how often the exit status is checked while the pipes are quiet
DRAIN_S = 0.5  # after the exit, how long output still held open (by a child) is read
STDERR_TAIL_LINES = 40


class LineSplitter:
    """Bytes in, complete lines out; a line longer than `limit` is dropped up to its newline."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> tuple[list[bytes], int]:
        """(the lines this chunk completed, how many over-long lines it started)."""
        lines, overlong, start = [], 0, 0
        while True:
            newline = chunk.find(b"\n", start)
            piece = chunk[start:] if newline < 0 else chunk[start:newline]
            if not self._skipping:
                if len(self._buffer) + len(piece) > self.limit:
                    self._skipping, overlong = True, overlong + 1
                    self._buffer.clear()
                else:
                    self._buffer += piece
            if newline < 0:
                return lines, overlong
            if not self._skipping:
                lines.append(bytes(self._buffer))
            self._buffer.clear()
            self._skipping, start = False, newline + 1


def _select_chunks(streams: dict, tick: float):
    """POSIX: (name, bytes) as output arrives (b"" at a stream's end), (None, b"") after `tick` quiet s."""
    with selectors.DefaultSelector() as selector:
        for name, stream in streams.items():
            selector.register(stream, selectors.EVENT_READ, name)
        while True:
            ready = selector.select(tick)
            if not ready:
                yield None, b""
            for key, _ in ready:
                chunk = os.read(key.fd, CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                yield key.data, chunk


def _threaded_chunks(streams: dict, tick: float):
    """Windows (pipes cannot be selected there): the same, with one small feeder thread per stream."""
    chunks: queue.Queue = queue.Queue(maxsize=16)  # bounded: a fast writer waits for the reader

    def feed(name, stream):
        while chunk := stream.read1(CHUNK):
            chunks.put((name, chunk))
        chunks.put((name, b""))

    for name, stream in streams.items():
        threading.Thread(target=feed, args=(name, stream), name=f"backend-{name}", daemon=True).start()
    while True:
        try:
            yield chunks.get(timeout=tick)
        except queue.Empty:
            yield None, b""


class BackendProcess:
    def __init__(self, argv: list[str], *, cwd: str, env: dict, on_line, on_overlong, on_end, log):
        self._on_line, self._on_overlong, self._on_end, self._log = on_line, on_overlong, on_end, log
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stopping = False  # close() was called: the end is not a death
        self.ended = False  # the reader has finished (and reported the end unless stopping)
        kwargs = {"creationflags": subprocess.CREATE_NO_WINDOW} if sys.platform == "win32" else {
            "start_new_session": True}  # its own group: Ctrl-C in Blender's terminal is not for it, close() ends it all
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      cwd=cwd, env=env, **kwargs)
        self._reader = threading.Thread(target=self._read, name="backend-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return not self.ended and self.popen.poll() is None

    def send(self, data: bytes) -> bool:
        """Write to its stdin; False when the process is gone (its end is reported by the reader)."""
        try:
            self.popen.stdin.write(data)
            self.popen.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def join(self, timeout: float) -> None:
        """Wait for the reader to deliver the last output and the end."""
        self._reader.join(timeout)

    def close(self, timeout: float, grace: float = 2.0) -> None:
        """Close its stdin and give it `timeout` s to exit; then end its whole process group:
        SIGTERM, and SIGKILL after `grace` s for whatever is left."""
        self.stopping = True
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._end_group(grace)
        self._reader.join(1)  # the final events (cancelled jobs) reach the caller
        if not self._reader.is_alive():
            self.popen.stdout.close()
            self.popen.stderr.close()

    # --- the reader thread ----------------------------------------------------------------------

    def _read(self) -> None:
        splitters = {"stdout": LineSplitter(MAX_EVENT_LINE), "stderr": LineSplitter(MAX_LOG_LINE)}
        streams = {"stdout": self.popen.stdout, "stderr": self.popen.stderr}
        chunks = _select_chunks(streams, TICK_S) if os.name == "posix" else _threaded_chunks(streams, TICK_S)
        open_streams, exited_at = set(streams), None
        for name, chunk in chunks:
            if name is not None and not chunk:
                open_streams.discard(name)
            elif name is not None:
                lines, overlong = splitters[name].feed(chunk)
                self._deliver(name, lines, overlong)
            if exited_at is None and self.popen.poll() is not None:
                exited_at = time.monotonic()
            if not open_streams or (exited_at is not None and time.monotonic() - exited_at > DRAIN_S):
                break
        chunks.close()
        try:
            self.popen.wait(DRAIN_S)  # end of file comes just before the exit
        except subprocess.TimeoutExpired:
            pass
        if not self.stopping:  # close() ends the group itself; a death leaves no orphans behind either
            self._end_group(grace=DRAIN_S)
        try:
            if not self.stopping:
                self._on_end(self)
        finally:
            self.ended = True

    def _deliver(self, name: str, lines: list[bytes], overlong: int) -> None:
        if name == "stdout":
            for line in lines:
                self._on_line(line)
            for _ in range(overlong):
                self._on_overlong()
            return
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            self._log(f"backend: {line}")
        if overlong:
            self._log(f"backend: (a log line over {MAX_LOG_LINE} bytes was left out)")

    # --- ending ---------------------------------------------------------------------------------

    def _end_group(self, grace: float) -> None:
        if sys.platform == "win32":
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait()
            return
        if _signal_group(self.popen.pid, signal.SIGTERM):
            deadline = time.monotonic() + grace
            while _signal_group(self.popen.pid, 0) and time.monotonic() < deadline:
                self.popen.poll()  # reaps the leader, so a group of one exited process counts as gone
                time.sleep(0.02)
            _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when the group no longer has any process."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left (macOS): nothing to end
        return False
