"""Supervision of one backend process: started in its own process group, its output read in bounded
chunks on one thread, its end noticed, and the whole group ended on close. Standard library only.

What the process says is handed on as it arrives: `on_line(bytes)` for each stdout line (the
protocol), `on_overlong()` once for each stdout line longer than `MAX_EVENT_LINE` (skipped up to its
newline, so memory stays bounded whatever the process writes), stderr lines to `log` and a short
tail, and `on_end(process)` once when the process ended by itself (not after `close`).

What is sent to it goes through a `Writer`: a thread of its own writes to the process's stdin, so a
caller never blocks on a pipe the process does not read. A process that reads nothing of what waits
for it for `stall_s` seconds (stopped, hung, an ssh link that hangs without a reset) is ended and
its end reported with `stalled` set; so is one that sends nothing for `quiet_limit` seconds once that
is set (a service that sends heartbeats: the link to it hangs, e.g. a stopped ssh session).
"""

from __future__ import annotations

import collections
import os
import queue
import re
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
ROUTINE_LOG = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG) ")  # backend/service/logs.py FORMAT
STALL_S = 30.0  # the service reads stdin on a thread of its own: a healthy one never lags this long
WRITE_BUFFER = 4 << 20  # bulk data (upload chunks) waiting to be written, at most
WRITE_SLICE = 64 << 10  # one pipe's capacity: progress is seen at least this often


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


class Writer:
    """Writes queued data to a file descriptor on a thread of its own, in order.

    `put` never blocks for small data; bulk data waits while `WRITE_BUFFER` bytes are queued, up to
    its deadline or until `cancelled()` says so. `stalled_for()` is how long data has waited without
    a byte of it written."""

    def __init__(self, stream, name: str = "backend-input"):
        self._stream = stream
        self._fd = stream.fileno()
        self._queue: collections.deque[memoryview] = collections.deque()
        self._bytes = 0
        self._progress = time.monotonic()
        self._closing = False
        self.failed = False  # a write failed: the reader is gone
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes, *, bulk: bool = False, timeout: float | None = None, cancelled=None) -> bool:
        """Queue `data`; False when it will never be written (closed, failed, timed out, cancelled)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while bulk and self._bytes >= WRITE_BUFFER and not (self._closing or self.failed):
                if (cancelled is not None and cancelled()) or (deadline is not None and time.monotonic() > deadline):
                    return False
                self._cond.wait(TICK_S)
            if self._closing or self.failed:
                return False
            if not self._bytes:
                self._progress = time.monotonic()
            self._queue.append(memoryview(data))
            self._bytes += len(data)
            self._cond.notify_all()
            return True

    def stalled_for(self) -> float:
        with self._cond:
            return time.monotonic() - self._progress if self._bytes else 0.0

    def close(self) -> None:
        """Write what is queued, then close the stream (at once if nothing is queued)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self.failed:
                    self._cond.wait()
                if not self._queue:
                    break
                data = self._queue[0]
            try:
                written = os.write(self._fd, data[:WRITE_SLICE])
            except OSError:  # the process is gone (EPIPE)
                with self._cond:
                    self.failed = True
                    self._queue.clear()
                    self._bytes = 0
                    self._cond.notify_all()
                break
            with self._cond:
                self._progress = time.monotonic()
                self._bytes -= written
                if written == len(data):
                    self._queue.popleft()
                else:
                    self._queue[0] = data[written:]
                self._cond.notify_all()
        try:
            self._stream.close()
        except OSError:
            pass


class BackendProcess:
    def __init__(self, argv: list[str], *, cwd: str, env: dict, on_line, on_overlong, on_end, log,
                 stall_s: float = STALL_S):
        self._on_line, self._on_overlong, self._on_end, self._log = on_line, on_overlong, on_end, log
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stopping = False  # close() was called: the end is not a death
        self.ended = False  # the reader has finished (and reported the end unless stopping)
        self.stall_s = stall_s
        self.quiet_limit: float | None = None  # set when the service sends heartbeats: silence this long is a stall
        self._heard = time.monotonic()  # when stdout last brought bytes
        self.stalled = ""  # why it was ended as stalled ("" unless it was)
        kwargs = {"creationflags": subprocess.CREATE_NO_WINDOW} if sys.platform == "win32" else {
            "start_new_session": True}  # its own group: Ctrl-C in Blender's terminal is not for it, close() ends it all
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      cwd=cwd, env=env, **kwargs)
        self.writer = Writer(self.popen.stdin)
        self._reader = threading.Thread(target=self._read, name="backend-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return not self.ended and self.popen.poll() is None

    def send(self, data: bytes, *, bulk: bool = False, timeout: float | None = None, cancelled=None) -> bool:
        """Queue `data` for its stdin (never blocks, except bulk data while the buffer is full: see
        `Writer.put`); False when it will not be written (the process is gone: its end is reported)."""
        return self.writer.put(data, bulk=bulk, timeout=timeout, cancelled=cancelled)

    def end_report(self) -> dict:
        """Why it ended, as the client's error fields: `backend_died` or `backend_stalled` (docs/PROTOCOL.md)."""
        code = self.popen.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        last = self.last_stderr_line()
        report = {"code": "backend_died", "message": f"the backend process {how}" + (f": {last}" if last else ""),
                  "hint": "it is restarted on the next request; its log (stderr tail here) says why",
                  "exit_code": code, "stderr_tail": "\n".join(list(self.stderr_tail)[-10:])}
        if self.stalled:
            report |= {"code": "backend_stalled", "message": f"the backend {self.stalled} and was ended",
                       "hint": "it is restarted on the next request; if it happens again check the link to it "
                       "(a remote backend: ssh keepalives, docs/guide/batch-and-remote.md, 'Remote GPU') and its log"}
        return report

    def last_stderr_line(self) -> str:
        """The last stderr line that may say why it ended (ssh's reason, a traceback's end): the
        service's own routine log lines (INFO, DEBUG), which a remote one's stderr mixes in, are not."""
        return next((line for line in reversed(self.stderr_tail) if line.strip() and not ROUTINE_LOG.match(line)), "")

    def join(self, timeout: float) -> None:
        """Wait for the reader to deliver the last output and the end."""
        self._reader.join(timeout)

    def close(self, timeout: float, grace: float = 2.0) -> None:
        """Close its stdin and give it `timeout` s to exit; then end its whole process group:
        SIGTERM, and SIGKILL after `grace` s for whatever is left."""
        self.stopping = True
        self.writer.close()
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
                if name == "stdout":
                    self._heard = time.monotonic()
                lines, overlong = splitters[name].feed(chunk)
                self._deliver(name, lines, overlong)
            if exited_at is None and self.popen.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is None and not self.stalled:
                self._check_stall()
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

    def _check_stall(self) -> None:
        if self.writer.stalled_for() > self.stall_s:
            self._stall(f"read nothing for {self.stall_s:g} s")
        elif self.quiet_limit is not None and time.monotonic() - self._heard > self.quiet_limit:
            self._stall(f"sent nothing (not even its heartbeat) for {self.quiet_limit:g} s")

    def _stall(self, why: str) -> None:
        self.stalled = why
        self._log(f"backend: {why}, ending it")
        if sys.platform == "win32":
            self.popen.kill()
        else:
            _signal_group(self.popen.pid, signal.SIGKILL)  # a stopped process ends only by SIGKILL

    def _end_group(self, grace: float) -> None:
        if sys.platform == "win32":
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait()
            return
        if _signal_group(self.popen.pid, signal.SIGTERM):
            _signal_group(self.popen.pid, signal.SIGCONT)  # a stopped service handles SIGTERM too (clean-up)
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
