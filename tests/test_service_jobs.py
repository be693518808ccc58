"""backend.service.jobs in-process: the worker survives a failing generation and cleans up after it.

The generation function is injected here so that a failure can be provoked at an exact moment (the
real engines validate their input too well to crash on demand); the subprocess tests in
test_service.py run the same runner on the real engines.
"""

from __future__ import annotations

import json
import queue
import threading

import pytest
from PIL import Image

from backend.errors import CancelledError
from backend.service.jobs import Job, JobRunner


@pytest.fixture
def runner():
    events: queue.Queue = queue.Queue()
    holder = {}

    def generate(*args, **kwargs):
        return holder["fn"](*args, **kwargs)

    r = JobRunner(events.put, generate)
    r.events, r.holder = events, holder
    yield r
    r.stop(10)


def _final(runner, job_id) -> dict:
    while True:
        event = runner.events.get(timeout=30)
        if event["id"] == job_id and event["type"] in ("result", "error", "cancelled"):
            return event


def _image(seed: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (seed * 40 % 256, 90, 160))
    image.info["parameters"] = json.dumps({"engine": "patch", "seed": seed})
    return image


def _job(job_id, tmp_path, **kw) -> Job:
    return Job(id=job_id, input=str(tmp_path / "brick.png"), output_dir=str(tmp_path / "out"),
               params={"engine": "patch"}, preview_every=1, **kw)


def test_an_exception_in_the_engine_becomes_an_error_event_and_the_next_job_runs(runner, tmp_path):
    def crash(*args, on_step, **kwargs):
        on_step(1, 4, _image(0))  # a preview was written before the crash
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    runner.holder["fn"] = crash
    runner.submit(_job("a", tmp_path))
    error = _final(runner, "a")
    assert error["type"] == "error" and error["code"] == "engine_failed"
    assert "RuntimeError: CUDA error: an illegal memory access" in error["message"] and error["hint"]
    assert not (tmp_path / "out").exists()  # the preview and the job folder it made are gone

    runner.holder["fn"] = lambda *args, **kwargs: [_image(1), _image(2)]
    runner.submit(_job("b", tmp_path, tiled_preview=True))
    result = _final(runner, "b")
    assert result["type"] == "result"
    names = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["brick-patch-s1-tiled3x3.png", "brick-patch-s1.png", "brick-patch-s2-tiled3x3.png",
                     "brick-patch-s2.png"]
    assert runner.snapshot()["jobs_done"] == 2


def test_a_cancel_after_the_last_step_keeps_nothing(runner, tmp_path):
    job = _job("c", tmp_path)

    def finish_while_cancelled(*args, on_step, cancel, **kwargs):
        on_step(1, 1, _image(0))
        runner.cancel("c")  # arrives after the engine's last check
        return [_image(3)]

    runner.holder["fn"] = finish_while_cancelled
    runner.submit(job)
    event = _final(runner, "c")
    assert event == {"type": "cancelled", "id": "c", "job": "c", "stage": "running", "cancel_step": 1,
                     "stopped_step": 1}
    assert not (tmp_path / "out").exists()


def test_stop_cancels_the_running_job_and_the_queue(runner, tmp_path):
    started = threading.Event()

    def until_cancelled(*args, on_step, cancel, **kwargs):
        for step in range(1, 10_000):
            started.set()
            if cancel.wait(0.01):
                raise CancelledError()
            on_step(step, 10_000, None)
        return []

    runner.holder["fn"] = until_cancelled
    runner.submit(_job("run", tmp_path))
    runner.submit(_job("wait", tmp_path))
    assert started.wait(30)
    assert runner.stop(30)
    finals = {}
    while not runner.events.empty():
        event = runner.events.get()
        if event["type"] == "cancelled":
            finals[event["id"]] = event["stage"]
    assert finals == {"run": "running", "wait": "queued"}
    assert not (tmp_path / "out").exists()
