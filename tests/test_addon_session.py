"""The add-on's session (blender_addon/connection/session.py) against the real backend service, without Blender:
the polling path the UI timer uses, the blocking path background mode uses, cancel, and errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from blender_addon.connection import client as backend_client
from blender_addon.connection import config as backend_config
from blender_addon.connection import job
from blender_addon.connection.session import Session
from blender_addon.errors import UserError
from tests.conftest import ROOT

PARAMS = {"engine": "patch", "variants": 1, "steps": 2, "size": 64, "tile": "both", "balance": 0.5,
          "appearance": "kv", "seed": 5}
# A job long enough to cancel: diffusion on the tiny models, many steps and variants.
LONG = {"engine": "diffusion", "steps": 200, "variants": 4}


@pytest.fixture(scope="module")
def config(tiny_models):
    return backend_config.resolve_config(python=sys.executable, base=str(tiny_models["base"]),
                                         ip_adapter=str(tiny_models["ip_adapter"]), device="cpu", environ={})


@pytest.fixture(scope="module")
def session():
    s = Session()
    yield s
    s.stop()


def pump_until_finished(session: Session, limit: float = 300) -> job.JobTracker:
    """What the modal operator's timer does, without a timer: poll, apply, repeat."""
    deadline = time.monotonic() + limit
    while not session.job.finished:
        assert time.monotonic() < deadline, "the job never finished"
        session.pump()
        time.sleep(0.05)
    return session.job


def test_pumping_runs_a_job_to_its_result(session, config, color_texture_path, tmp_path):
    j = session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS))
    assert session.busy and j.state == job.QUEUED
    with pytest.raises(UserError) as e:
        session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS))
    assert e.value.code == "busy"
    j = pump_until_finished(session)
    assert j.state == job.DONE, j.error
    assert j.total >= 1 and j.step == j.total and j.fraction == 1.0
    assert len(j.files) == 1 and j.files[0]["parameters"]["seed"] == 5
    assert tmp_path in Path(j.files[0]["path"]).parents
    assert not session.busy and session.hello["protocol"] == backend_client.PROTOCOL_VERSION


def test_cancel_while_pumping(session, config, color_texture_path, tmp_path):
    session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), PARAMS | LONG)
    session.cancel()
    j = pump_until_finished(session)
    assert j.state == job.CANCELLED and j.cancel_requested and not j.files
    assert not list(tmp_path.rglob("*.png"))  # a cancelled job leaves no variants


def test_run_to_end_blocks_and_cancels_past_its_timeout(session, config, color_texture_path, tmp_path):
    session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), PARAMS | LONG)
    j = session.run_to_end(timeout=0.5)
    assert j.state == job.CANCELLED
    session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS))
    assert session.run_to_end().state == job.DONE


def test_backend_errors_arrive_as_failed_jobs(session, config, tmp_path):
    missing = tmp_path / "nothing.png"
    session.submit(config, str(ROOT), str(missing), str(tmp_path / "out"), dict(PARAMS))
    j = session.run_to_end()
    assert j.state == job.FAILED and j.error["code"] == "bad_input"
    assert "To fix:" in str(UserError.from_event(j.error))


def test_one_client_per_configuration(config, tmp_path):
    s = Session()
    try:
        first = s.client(config, str(ROOT))
        assert s.client(config, str(ROOT)) is first
        s.start(config, str(ROOT))
        pid = first.pid
        other = backend_config.resolve_config(python=sys.executable, device="cpu", environ={})
        assert s.client(other, str(ROOT)) is not first
        assert not first.alive and pid is not None  # the old backend was stopped
    finally:
        s.stop()


def test_not_set_up_says_what_to_do(tmp_path):
    s = Session()
    missing = backend_config.resolve_config(python=str(tmp_path / "venv" / "bin" / "python"), environ={})
    with pytest.raises(UserError) as e:
        s.start(missing, str(ROOT))
    assert e.value.code == "not_set_up" and "Set up backend" in str(e.value)


def test_submitting_in_a_thread_never_waits_for_the_backend(config, color_texture_path, tmp_path):
    s = Session()
    try:
        j = s.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS), in_thread=True)
        assert j.state == job.QUEUED and s.busy
        assert pump_until_finished(s).state == job.DONE
    finally:
        s.stop()


def test_cancel_before_the_backend_has_started(config, color_texture_path, tmp_path):
    s = Session()
    try:
        s.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), PARAMS | LONG, in_thread=True)
        s.cancel()  # the backend is still starting: the job has no id yet
        assert pump_until_finished(s).state == job.CANCELLED
    finally:
        s.stop()


def test_a_backend_that_cannot_start_fails_the_threaded_job(tmp_path, color_texture_path):
    s = Session()
    missing = backend_config.resolve_config(python=str(tmp_path / "venv" / "bin" / "python"), environ={})
    s.submit(missing, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS), in_thread=True)
    j = pump_until_finished(s, limit=30)
    assert j.state == job.FAILED and j.error["code"] == "not_set_up"


def test_status_answers_are_kept_apart_from_the_job(session, config, color_texture_path, tmp_path):
    session.start(config, str(ROOT))
    session.submit(config, str(ROOT), str(color_texture_path), str(tmp_path), dict(PARAMS))
    asked = session.request_status()
    deadline = time.monotonic() + 120
    while asked not in session.replies or not session.job.finished:
        assert time.monotonic() < deadline
        session.pump()
        time.sleep(0.05)
    reply = session.replies.pop(asked)
    assert reply["type"] == "status" and session.job.state == job.DONE
    session.note_status(reply)
    assert session.hello["device_detail"] == reply["device_detail"]
    assert session.device_known() == bool(reply["device"])
