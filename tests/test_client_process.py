"""blender_addon/connection/process.py through real subprocesses: bounded reading of whatever the backend
writes, and the whole process group ended on stop and on death. Fake backends stand in for the
service (a `backend` package written into a temporary folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blender_addon.connection import job as jobs
from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config
from blender_addon.connection.process import LineSplitter
from tests.conftest import ROOT

# Answers hello with the client's own protocol version; `status` is answered as the test needs.
FAKE_HEAD = """
import json, os, signal, subprocess, sys, time
def send(event):
    sys.stdout.write(json.dumps(event) + "\\n"); sys.stdout.flush()
"""
FAKE_LOOP = """
for line in sys.stdin:
    request = json.loads(line)
    if request["type"] == "hello":
        send({"type": "hello", "id": request["id"], "protocol": request["protocol"], **HELLO})
    elif request["type"] == "status":
        on_status(request)
"""

GIANT_LINE = FAKE_HEAD + """
HELLO = {}
def on_status(request):  # 300 MB without a newline, then the line's end and a valid answer
    block = b"x" * (1 << 20)
    for _ in range(300):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.write(b"\\n" + json.dumps({"type": "status", "id": request["id"]}).encode() + b"\\n")
    sys.stdout.flush()
""" + FAKE_LOOP

# Starts a child that ignores SIGTERM (only SIGKILL ends it) and says its pid in hello.
WITH_CHILD = FAKE_HEAD + """
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
HELLO = {"child": child.pid}
def on_status(request):
    pass
""" + FAKE_LOOP

# Measures the client's memory in a process of its own: (resident now, peak) in MB, from /proc.
PROBE = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
from blender_addon.connection import job as jobs
from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config

def memory(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

client = BackendClient(resolve_config(python=sys.executable, environ={}), backend_root=sys.argv[1])
client.start()
before = memory("VmRSS")
asked, events, deadline = client.request("status"), [], time.monotonic() + 120
while not any(e.get("id") == asked for e in events) and time.monotonic() < deadline:
    events += client.poll()
    time.sleep(0.05)
print(json.dumps({"before": before, "peak": memory("VmHWM"), "after": memory("VmRSS"),
                  "events": [(e.get("type"), e.get("id") == asked, e.get("code")) for e in events]}))
client.stop()
"""


def _fake_backend(tmp_path: Path, source: str) -> Path:
    root = tmp_path / "fake"
    (root / "backend").mkdir(parents=True)
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(textwrap.dedent(source))
    return root


def _gone(pid: int, wait: float = 0.0) -> bool:
    """Exited (a zombie waiting for init to reap it counts as exited), waiting up to `wait` seconds:
    SIGKILL is delivered asynchronously, so a loaded machine may show the process a moment longer."""
    deadline = time.monotonic() + wait
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _exited(pid)


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.lists(st.integers(1, 50), max_size=20), st.integers(1, 30))
def test_line_splitter_keeps_short_lines_and_drops_long_ones_whatever_the_chunks(lines, cuts, limit):
    data = b"".join(line + b"\n" for line in lines)
    splitter, got, overlong, at = LineSplitter(limit), [], 0, 0
    for cut in [*cuts, len(data)]:
        out, n = splitter.feed(data[at:at + cut])
        got, overlong, at = got + out, overlong + n, at + cut
    assert got == [line for line in lines if len(line) <= limit]
    assert overlong == sum(len(line) > limit for line in lines)
    assert len(splitter._buffer) <= limit


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc (Linux)")
def test_a_300_mb_line_is_skipped_with_bounded_memory_and_reading_goes_on(tmp_path):
    root = _fake_backend(tmp_path, GIANT_LINE)
    out = subprocess.run([sys.executable, "-c", PROBE, str(root), str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout)
    print(f"client RSS {probe['before']:.0f} MB -> peak {probe['peak']:.0f} MB, {probe['after']:.0f} MB after")
    assert probe["peak"] - probe["before"] < 40  # the line is 300 MB; the client holds at most 4 MiB of it
    assert probe["events"] == [["error", False, "protocol_error"], ["status", True, None]]  # once, then on


def test_stop_ends_the_backend_and_what_it_started(tmp_path):
    client = BackendClient(resolve_config(python=sys.executable, environ={}),
                           backend_root=_fake_backend(tmp_path, WITH_CHILD))
    child = client.start()["child"]
    leader = client.pid
    assert os.getpgid(child) == leader != os.getpgid(0)  # a process group of its own
    started = time.monotonic()
    client.stop(timeout=1)
    took = time.monotonic() - started
    print(f"stop took {took:.2f} s (the child ignores SIGTERM: SIGKILL after the grace)")
    assert _gone(leader, wait=5) and _gone(child, wait=5)
    assert took < 1 + 2 + 2  # timeout + grace + slack
    assert client.poll() == []  # an asked-for stop is not a death


def test_a_dead_backend_leaves_no_children_behind(tmp_path):
    client = BackendClient(resolve_config(python=sys.executable, environ={}),
                           backend_root=_fake_backend(tmp_path, WITH_CHILD))
    child = client.start()["child"]
    os.kill(client.pid, signal.SIGKILL)  # the child still holds stdout open: no end of file comes
    events, deadline = [], time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        events = client.poll()
        time.sleep(0.02)
    assert [(e["type"], e["code"], e["exit_code"]) for e in events] == [("error", "backend_died", -9)]
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(child)
    client.stop()


def test_trusting_pickled_weights_is_a_start_option_never_a_request_field():
    settings = {"engine": "diffusion", "variants": 1, "steps": 2, "size": 64, "tile": "both", "balance": 0.5,
                "appearance": "kv", "style_only": True, "suppress_content": "bricks"}
    assert not {"allow_pickle", "extra"} & set(jobs.request_params(settings, 1))
    assert "--allow-pickle" not in resolve_config(python="/p", environ={}).command()
    assert resolve_config(python="/p", allow_pickle=True, environ={}).command()[-1] == "--allow-pickle"
