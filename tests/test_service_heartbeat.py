"""The service's heartbeat (docs/PROTOCOL.md, "heartbeat"): an event with id null every
`serve --heartbeat-s` seconds while it serves, announced in hello; `--heartbeat-s 0` sends none."""

from __future__ import annotations

import time

from tests.service_process import ServiceProcess


def test_heartbeats_come_at_the_interval_hello_announces(tmp_path):
    proc = ServiceProcess(tmp_path, "--heartbeat-s", "0.2")
    try:
        assert proc.ask("hello")["heartbeat_s"] == 0.2
        before = len(proc.heartbeats)
        time.sleep(1.5)
        during = len(proc.heartbeats) - before
        assert proc.ask("status")["type"] == "status"  # requests are answered between them as ever
    finally:
        assert proc.stop() == 0, proc.stderr_tail()
    assert 4 <= during <= 8, during
    beats = proc.heartbeats
    assert all(set(beat) == {"type", "id", "uptime"} and beat["id"] is None for beat in beats)
    steps = [b["uptime"] - a["uptime"] for a, b in zip(beats, beats[1:], strict=False)]
    assert all(0.1 <= step <= 0.6 for step in steps), steps
    assert proc.bad_lines == []


def test_no_heartbeat_when_switched_off(tmp_path):
    proc = ServiceProcess(tmp_path, "--heartbeat-s", "0")
    try:
        assert proc.ask("hello")["heartbeat_s"] is None
        time.sleep(0.5)
    finally:
        assert proc.stop() == 0, proc.stderr_tail()
    assert proc.heartbeats == []


def test_an_interval_that_would_flood_or_never_beat_is_refused(tmp_path):
    for value in ("0.01", "nan"):
        proc = ServiceProcess(tmp_path, "--heartbeat-s", value)
        assert proc.wait(60) == 2
        assert "--heartbeat-s" in proc.stderr_path.read_text()
