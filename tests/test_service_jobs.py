"""backend.service.jobs in-process: the worker survives a failing generation and cleans up after it;
the error table case by case, a hanging read, admission cost and the event-line limit.

The generation function is injected here so that a failure can be provoked at an exact moment (the
real engines validate their input too well to crash on demand); the subprocess tests in
test_service.py run the same runner on the real engines.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import threading
import time

import pytest
from PIL import Image

from backend.errors import OUTPUT_ERRNOS, OUTPUT_HINT, CancelledError, InputError, classify
from backend.params import GenerationParams
from backend.service.encoding import encode
from backend.service.jobs import STATUS_QUEUE_SHOWN, Job, JobRunner
from backend.service.protocol import MAX_EVENT_BYTES, error_event, event
from tests.service_process import LineSink


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
               params=GenerationParams(engine="patch"), preview_every=1, **kw)


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
    assert names == [".job-b.done.json", "brick-patch-s1-tiled3x3.png", "brick-patch-s1.png",
                     "brick-patch-s2-tiled3x3.png", "brick-patch-s2.png"]  # no staging folder left
    marker = json.loads((tmp_path / "out" / ".job-b.done.json").read_text())
    assert marker == {"job": "b", "files": result["files"]}  # the completion marker lists what the result names
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


# --- the error table, case by case (faults injected in-process) -----------------------------------

@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                                 errno.ENAMETOOLONG])
def test_every_write_failure_of_the_table_is_bad_output_or_no_space_with_its_hint(err):
    error = classify(OSError(err, os.strerror(err), "/out/x.png"), engine="patch")
    full = err in (errno.ENOSPC, errno.EDQUOT)
    assert (error.code, error.hint) == ("no_space" if full else "bad_output", OUTPUT_HINT)
    assert "/out/x.png" in error.message and OUTPUT_ERRNOS[err] in error.message
    assert ("MB free of" in error.message) == full  # a full disk says how full (of `/`, the nearest folder)


def test_the_rest_of_the_table():
    unencodable = classify(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert (unencodable.code, unencodable.hint) == ("bad_output", OUTPUT_HINT)
    known = InputError("input image not found: /x.png", hint="check the path")
    assert classify(known) is known
    crash = RuntimeError("CUDA error: out of memory")
    assert classify(crash, engine="patch").code == "engine_failed"
    assert "patch engine" not in classify(crash, engine="patch").hint
    for engine in ("diffusion", None):
        assert "patch engine" in classify(crash, engine=engine).hint
    assert classify(OSError(errno.EIO, "I/O error")).code == "engine_failed"  # not a write problem


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EFBIG, errno.EROFS])
def test_a_disk_failure_while_writing_a_result_is_reported_and_removes_everything(runner, tmp_path, monkeypatch,
                                                                                   err):
    real_fsync = os.fsync
    calls = []

    def fsync(fd):  # the first variant is written, the second fails
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(err, os.strerror(err))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    runner.holder["fn"] = lambda *args, on_step, **kwargs: (on_step(1, 1, _image(0)), [_image(1), _image(2)])[1]
    runner.submit(_job("full", tmp_path))
    error = _final(runner, "full")
    assert (error["code"], error["hint"]) == ("no_space" if err == errno.ENOSPC else "bad_output", OUTPUT_HINT), error
    assert not (tmp_path / "out").exists()  # the first variant, the preview, temporaries, the folder


def test_the_engine_failed_hint_names_the_patch_engine_only_when_it_was_not_used(runner, tmp_path):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    runner.holder["fn"] = crash
    runner.submit(_job("p", tmp_path))
    assert "patch engine" not in _final(runner, "p")["hint"]
    runner.submit(Job(id="d", input=str(tmp_path / "b.png"), output_dir=str(tmp_path / "out"),
                      params=GenerationParams(engine="diffusion")))
    assert "patch engine" in _final(runner, "d")["hint"]


# --- a read that hangs ends the job, not the queue ----------------------------------------------------

def test_a_hanging_read_is_ended_by_cancel_and_by_the_timeout(monkeypatch, color_texture_path):
    from backend import images

    release = threading.Event()
    monkeypatch.setattr(images, "load_reference", lambda path: release.wait(60))  # a stuck network mount
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        images.read_reference(color_texture_path, cancel=cancel)
    assert time.monotonic() - started < 2
    with pytest.raises(InputError, match="longer than"):
        images.read_reference(color_texture_path, timeout=0.3)
    release.set()
    monkeypatch.undo()
    assert images.read_reference(color_texture_path).size == (128, 128)


# --- bounds ------------------------------------------------------------------------------------------------

def test_admission_is_constant_time_and_status_stays_small(tmp_path):
    """20,000 generate requests into a real Service whose worker is busy: before, each admission
    scanned and listed the whole queue (quadratic: about 2.5 min for 20,000)."""
    from backend.service.server import Service

    sink = LineSink()
    release = threading.Event()
    service = Service(sink, max_queue=100_000)
    service._generate = lambda *args, **kwargs: (release.wait(60), [])[1]
    service.runner._generate = service._generate
    request = {"type": "generate", "input": str(tmp_path / "in.png"), "output_dir": str(tmp_path), "engine": "patch"}
    started = time.monotonic()
    for i in range(20_000):
        service.handle(json.dumps(request | {"id": i}).encode())
    admitted_s = time.monotonic() - started
    service.handle(b'{"id": "s", "type": "status"}')
    status = json.loads(sink.lines[-1])
    release.set()
    service.runner.stop(30)
    assert sum(b'"accepted"' in line for line in sink.lines) == 20_000
    assert status["queued"] >= 19_999 and len(status["queue"]) == STATUS_QUEUE_SHOWN
    assert len(sink.lines[-1]) < 10_000
    assert admitted_s < 20, admitted_s


def test_encode_keeps_every_event_under_the_line_limit():
    huge = error_event("x", "engine_failed", "m" * (5 * MAX_EVENT_BYTES), "h" * 100)
    line = encode(huge)
    assert len(line) <= MAX_EVENT_BYTES and line.endswith(b"\n")
    decoded = json.loads(line)
    assert decoded["truncated"] is True and decoded["code"] == "engine_failed" and decoded["hint"] == "h" * 100
    files = [{"path": f"/out/v{i}.png", "parameters": {"prompt": "p" * 200_000}} for i in range(16)]
    decoded = json.loads(encode(event("result", "r", job="r", files=files)))
    assert [f["path"] for f in decoded["files"]] == [f["path"] for f in files]
    small = event("ack", "a", request="shutdown")
    assert json.loads(encode(small)) == small  # untouched when it fits
