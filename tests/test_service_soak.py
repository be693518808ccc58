"""Soak: a real service under thousands of mixed requests stays bounded (left out of the default run).

Run with `scripts/test -m slow tests/test_service_soak.py` (or `.venv/bin/python -m pytest -m slow`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import pytest

from backend.service.protocol import MAX_EVENT_BYTES
from tests.service_process import ServiceProcess
from tests.test_service_fuzz import CORPUS

pytestmark = pytest.mark.slow

MAX_QUEUE = 40
REQUESTS = 3000
PATCH = dict(engine="patch", size=64)
FINAL = ("result", "error", "cancelled")


def _requests(rng: random.Random, good: str, bad: str, out: str) -> list[tuple[str | None, str, bytes]]:
    """(id or None for a corpus line, kind, line): valid and invalid jobs, cancels, status, garbage."""
    made, jobs = [], []
    for i in range(REQUESTS):
        r, rid = rng.random(), f"s{i}"
        if r < 0.3:
            line, _, _ = rng.choice(CORPUS)
            made.append((None, "corpus", line))
            continue
        if r < 0.65:
            fields = {"input": good if rng.random() < 0.6 else bad, "output_dir": out, "seed": i, **PATCH}
            kind = "generate"
            jobs.append(rid)
        elif r < 0.85 and jobs:
            fields, kind = {"job": rng.choice(jobs[-60:])}, "cancel"
        else:
            kind = rng.choice(("status", "hello"))
            fields = {}
        made.append((rid, kind, json.dumps({"id": rid, "type": kind, **fields}).encode()))
    return made


def test_thousands_of_mixed_requests_keep_memory_lines_and_answers_bounded(tmp_path, color_texture_path):
    proc = ServiceProcess(tmp_path, "--max-queue", str(MAX_QUEUE))
    out = tmp_path / "out"
    bad = tmp_path / "fifo.png"
    os.mkfifo(bad)
    warm = proc.send("generate", input=str(color_texture_path), output_dir=str(out), **PATCH)
    assert proc.job_events(warm)[-1]["type"] == "result"
    rss_start = proc.rss_mb()
    requests = _requests(random.Random(17), str(color_texture_path), str(bad), str(out))
    answers: dict[str, list[dict]] = {}
    corpus_answers, rss_peak, queued_peak = 0, rss_start, 0

    def collect(timeout: float) -> None:
        nonlocal corpus_answers, queued_peak
        while (event := proc.next_event(timeout)) is not None:
            if event["id"] is None or not str(event["id"]).startswith("s"):
                corpus_answers += 1
            else:
                answers.setdefault(event["id"], []).append(event)
                if event["type"] == "status":
                    queued_peak = max(queued_peak, event["queued"])
                    assert len(event["queue"]) <= 10
            if proc.events.empty():
                return

    started = time.monotonic()
    for n, (_, _, line) in enumerate(requests):
        proc.send_line(line)
        if n % 100 == 99:
            collect(30)
            rss_peak = max(rss_peak, proc.rss_mb())
    deadline = time.monotonic() + 600
    jobs = [rid for rid, kind, _ in requests if kind == "generate"]
    while time.monotonic() < deadline and not all(
            any(e["type"] in FINAL for e in answers.get(rid, [])) for rid in jobs):
        collect(30)
    took = time.monotonic() - started
    rss_end = proc.rss_mb()

    # Every request got its answer: one error per corpus line, one reply per status/hello/cancel, and
    # per job an accepted + exactly one final event, or exactly one refusal (busy).
    assert corpus_answers == sum(1 for rid, _, _ in requests if rid is None)
    for rid, kind, _ in requests:
        if rid is None:
            continue
        got = answers.get(rid, [])
        if kind == "generate":
            finals = [e for e in got if e["type"] in FINAL]
            assert len(finals) == 1, got
            assert [e["type"] for e in got][0] == "accepted" or finals[0].get("code") == "busy", got
        elif kind == "cancel":
            assert len([e for e in got if e["type"] in ("ack", "error")]) == 1, got
        else:
            assert [e["type"] for e in got] == [kind], got
    busy = sum(1 for evs in answers.values() for e in evs if e.get("code") == "busy")
    assert busy > 0 and queued_peak <= MAX_QUEUE  # the bound was reached and held
    assert proc.longest_line <= MAX_EVENT_BYTES and proc.bad_lines == []
    assert rss_peak - rss_start < 150 and rss_end - rss_start < 150, (rss_start, rss_peak, rss_end)
    print(f"soak: {REQUESTS} requests in {took:.1f} s, {busy} busy, RSS {rss_start:.0f} -> peak {rss_peak:.0f}"
          f" -> {rss_end:.0f} MB, longest line {proc.longest_line} B")
    assert proc.stop() == 0


def test_admission_time_grows_linearly_up_to_20000_requests(tmp_path):
    """Before: 2,000 requests 1.6 s, 6,000 15.2 s, 20,000 about 2.5 min (each scanned the queue)."""
    times = {}
    for n in (2000, 6000, 20000):
        (tmp_path / str(n)).mkdir()
        proc = ServiceProcess(tmp_path / str(n), "--max-queue", "100000")
        lines = b"".join(json.dumps({"id": f"j{i}", "type": "generate", "input": "/nonexistent.png",
                                     "output_dir": str(tmp_path), **PATCH}).encode() + b"\n" for i in range(n))
        started = time.monotonic()
        proc.send_line(lines)
        proc.until(lambda e, last=f"j{n - 1}": e["id"] == last and e["type"] == "accepted", timeout=300)
        times[n] = time.monotonic() - started
        assert proc.stop() == 0
    print("admission:", {n: round(t, 2) for n, t in times.items()})
    assert times[20000] < 60
    assert times[20000] / 20000 < 4 * max(times[2000] / 2000, 1e-4)  # per request: not growing with n


def test_stalls_of_the_service_block_no_caller_and_lose_no_answer(tmp_path, color_texture_path, monkeypatch):
    """The client under a stream of jobs, cancels and status requests while the service is stopped
    (SIGSTOP) for a second every 40 requests: no call blocks, every job ends exactly once; then a stall
    past `stall_timeout` with requests waiting ends the service with `backend_stalled` for each job."""
    from blender_addon.connection.client import BackendClient
    from blender_addon.connection.config import resolve_config
    from tests.conftest import ROOT

    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    client = BackendClient(resolve_config(python=sys.executable, environ={}), backend_root=ROOT, log=lambda _: None)
    client.stall_timeout = 3.0
    client.start()
    rng, jobs, slowest, events = random.Random(5), [], 0.0, []
    for i in range(400):
        if i % 40 == 20:
            os.kill(client.pid, signal.SIGSTOP)
        if i % 40 == 21:
            time.sleep(1.0)
            os.kill(client.pid, signal.SIGCONT)
        began = time.monotonic()
        r = rng.random()
        if r < 0.5:
            jobs.append(client.generate(color_texture_path, tmp_path / f"j{i}", seed=i, **PATCH))
        elif r < 0.75 and jobs:
            client.cancel(rng.choice(jobs))
        else:
            client.request("status")
        slowest = max(slowest, time.monotonic() - began)
        events += client.poll()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len({e["id"] for e in events if e["type"] in FINAL} & set(jobs)) < len(jobs):
        events += client.poll()
        time.sleep(0.05)
    finals = [e["id"] for e in events if e["type"] in FINAL and e["id"] in jobs]
    assert sorted(finals) == sorted(jobs)  # exactly one final event per job
    assert not any(e.get("code") in ("backend_died", "backend_stalled") for e in events)
    assert slowest < 0.5, slowest

    pid, waiting = client.pid, [client.generate(color_texture_path, tmp_path / "w", seed=1, size=2048,
                                                engine="patch", variants=16)]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    for _ in range(3000):  # far more than the pipe holds: the writer waits, the stall is seen
        client.request("status")
    assert time.monotonic() - stopped < 1.0
    ended = client.wait(waiting[0], timeout=client.stall_timeout + 10)
    assert ended["code"] == "backend_stalled" and time.monotonic() - stopped < client.stall_timeout + 3
    print(f"stalls: {len(jobs)} jobs, slowest call {slowest * 1000:.0f} ms, stall reported after "
          f"{time.monotonic() - stopped:.1f} s")
    assert client.generate(color_texture_path, tmp_path / "after", seed=2, **PATCH)  # a fresh service
    client.stop()
