"""blender_addon/connection/client.py against the real service: start, jobs, poll/wait, death, restart."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from blender_addon.connection import client as backend_client
from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config
from blender_addon.errors import UserError
from tests.conftest import ROOT

TINY = dict(engine="diffusion", size=64, steps=2, seed=5)


@pytest.fixture(autouse=True)
def _logs(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    for name in ("TEXTURE_VARIANTS_PYTHON", "TEXTURE_VARIANTS_BASE", "TEXTURE_VARIANTS_IP_ADAPTER",
                 "TEXTURE_VARIANTS_DEVICE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tiny_models):
    return resolve_config(python=sys.executable, base=str(tiny_models["base"]),
                          ip_adapter=str(tiny_models["ip_adapter"]))


def _client(config):
    lines = []
    c = BackendClient(config, backend_root=ROOT, log=lines.append)
    c.log_lines = lines
    return c


@pytest.fixture
def client(config):
    """A client of its own, for tests that kill or stop the service."""
    c = _client(config)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def shared_client(tiny_models, tmp_path_factory):
    """One service for the tests that leave it running (starting one costs seconds on a small CPU)."""
    config = resolve_config(python=sys.executable, base=str(tiny_models["base"]),
                            ip_adapter=str(tiny_models["ip_adapter"]), environ={})
    c = _client(config)
    with pytest.MonkeyPatch.context() as env:  # the service inherits the environment when it starts
        env.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path_factory.mktemp("client-logs")))
        c.start()
    yield c
    c.stop()


def _poll_until_final(client, job_id, guard_s=180):
    """Drive the client the way the add-on's timer does: poll without blocking, again and again."""
    events, deadline = [], time.monotonic() + guard_s
    while time.monotonic() < deadline:
        batch = client.poll()
        events += batch
        if any(e["id"] == job_id and e["type"] in backend_client.FINAL_EVENTS for e in batch):
            return events
        time.sleep(0.05)
    raise AssertionError(f"no final event for {job_id}; got {events}")


def test_config_environment_variables_override_arguments():
    env = {"TEXTURE_VARIANTS_PYTHON": "/farm/python", "TEXTURE_VARIANTS_BASE": "/farm/sd15",
           "TEXTURE_VARIANTS_IP_ADAPTER": "/farm/ip", "TEXTURE_VARIANTS_DEVICE": "cuda:1"}
    config = resolve_config(python="/home/me/python", base="/home/me/sd15", ip_adapter=None, device="cpu",
                            environ=env)
    assert (config.python, config.base, config.ip_adapter, config.device) == (
        "/farm/python", "/farm/sd15", "/farm/ip", "cuda:1")
    config = resolve_config(python="/home/me/python", base=Path("/home/me/sd15"), ip_adapter="", environ={})
    assert (config.python, config.base, config.ip_adapter, config.device) == (
        "/home/me/python", "/home/me/sd15", None, None)
    assert config.command() == ["/home/me/python", "-m", "backend", "serve", "--base", "/home/me/sd15"]


@pytest.mark.parametrize("python", [None, "/no/such/python"])
def test_no_interpreter_is_a_not_set_up_error(python):
    client = BackendClient(resolve_config(python=python, environ={}), backend_root=ROOT)
    with pytest.raises(UserError) as error:
        client.start()
    assert error.value.code == "not_set_up" and "TEXTURE_VARIANTS_PYTHON" in error.value.hint
    assert not client.alive


def test_a_folder_without_the_backend_is_a_not_set_up_error(tmp_path):
    client = BackendClient(resolve_config(python=sys.executable, environ={}), backend_root=tmp_path)
    with pytest.raises(UserError) as error:
        client.start()
    assert error.value.code == "not_set_up" and str(tmp_path) in error.value.message


def test_an_interpreter_that_dies_at_start_is_reported(tmp_path):
    """An interpreter without the backend's dependencies fails on import; the error shows why."""
    fake_root = tmp_path / "root"
    (fake_root / "backend").mkdir(parents=True)
    (fake_root / "backend" / "__init__.py").write_text("")
    (fake_root / "backend" / "__main__.py").write_text("import torchvision_that_is_not_here\n")
    client = BackendClient(resolve_config(python=sys.executable, environ={}), backend_root=fake_root)
    with pytest.raises(UserError) as error:
        client.start()
    assert error.value.code == "backend_died"
    assert "ModuleNotFoundError" in error.value.message
    assert not client.alive
    assert client.poll() == []  # reported once, by the exception


def test_full_job_hello_generate_progress_result(shared_client, color_texture_path, tmp_path):
    client = shared_client
    hello = client.start()
    assert hello["protocol"] == backend_client.PROTOCOL_VERSION
    assert hello["engines"]["diffusion"]["available"] is True
    assert client.start() is hello  # running: no second process, no second hello
    assert client.poll() == []  # nothing pending: returns at once, empty

    job = client.generate(color_texture_path, tmp_path / "out", variants=2, preview_every=1, **TINY)
    events = _poll_until_final(client, job)
    mine = [e for e in events if e["id"] == job]
    assert mine[0]["type"] == "accepted"
    progress = [e for e in mine if e["type"] == "progress"]
    assert [e["step"] for e in progress] == list(range(1, progress[-1]["total"] + 1))
    result = mine[-1]
    assert result["type"] == "result" and len(result["files"]) == 2
    for entry in result["files"]:
        with Image.open(entry["path"]) as im:
            im.verify()
        with Image.open(entry["path"]) as im:
            assert im.format == "PNG" and im.size == (64, 64)
    assert any(line.startswith("backend: ") for line in client.log_lines)  # its stderr reaches the log


def test_wait_returns_the_final_event_and_keeps_other_events_for_poll(shared_client, color_texture_path,
                                                                      tmp_path):
    client = shared_client
    status_id = client.request("status")
    job = client.generate(color_texture_path, tmp_path, engine="patch", size=64, seed=1)
    seen = []
    final = client.wait(job, timeout=180, on_event=seen.append)
    assert final["type"] == "result" and seen[-1] is final
    assert [e["type"] for e in seen][0] == "accepted"
    assert all(e["id"] == job for e in seen)
    left = client.poll()
    assert [e["type"] for e in left if e["id"] == status_id] == ["status"]


def test_cancel_through_the_client(shared_client, color_texture_path, tmp_path):
    client = shared_client
    job = client.generate(color_texture_path, tmp_path, **TINY | {"steps": 30})

    def cancel_on_first_step(event):
        if event["type"] == "progress" and event["step"] == 1:
            client.cancel(job)

    final = client.wait(job, timeout=180, on_event=cancel_on_first_step)
    assert final["type"] == "cancelled"
    assert final["stopped_step"] - final["cancel_step"] <= 1
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError) as timeout:
        client.wait("generate-does-not-exist", timeout=0.2)
    assert timeout.value.code == "timeout"


def test_kill_9_during_a_job_is_reported_and_the_next_request_restarts(client, color_texture_path, tmp_path):
    job = client.generate(color_texture_path, tmp_path, **TINY | {"steps": 30})
    pid = client.pid
    killed_at = []

    def kill_on_first_step(event):
        if event["type"] == "progress" and not killed_at:
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    final = client.wait(job, timeout=180, on_event=kill_on_first_step)
    noticed_after = time.monotonic() - killed_at[0]
    print(f"death noticed {noticed_after * 1000:.0f} ms after kill -9")
    assert final["type"] == "error" and final["code"] == "backend_died"
    assert final["exit_code"] == -signal.SIGKILL and "signal 9" in final["message"]
    assert not client.alive

    again = client.generate(color_texture_path, tmp_path / "after", engine="patch", size=64, seed=3)
    assert client.pid != pid and client.alive  # generate started a fresh service on its own
    result = client.wait(again, timeout=180)
    assert result["type"] == "result" and Path(result["files"][0]["path"]).is_file()


def test_death_while_idle_is_reported_by_poll(client):
    client.start()
    os.kill(client.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # guard only
    events = []
    while not events and time.monotonic() < deadline:
        events = client.poll()
        time.sleep(0.02)
    assert [(e["type"], e["code"], e["id"]) for e in events] == [("error", "backend_died", None)]
    assert client.start()["type"] == "hello"  # a fresh service

    # A death nobody polled for is not reported after a fresh service replaced the process.
    os.kill(client.pid, signal.SIGKILL)
    while client.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.start()["type"] == "hello"
    assert client.poll() == []


def test_stop_shuts_the_service_down(client):
    client.start()
    pid = client.pid
    client.stop()
    assert not client.alive and client.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    assert client.poll() == []  # an asked-for stop is not a death


def test_protocol_mismatch_with_a_newer_client(config, monkeypatch):
    monkeypatch.setattr(backend_client, "PROTOCOL_VERSION", backend_client.PROTOCOL_VERSION + 1)
    client = BackendClient(config, backend_root=ROOT)
    with pytest.raises(UserError) as error:
        client.start()
    assert error.value.code == "protocol_mismatch"
    newer, ours = backend_client.PROTOCOL_VERSION, backend_client.PROTOCOL_VERSION - 1
    assert f"protocol {newer}" in error.value.message and f"protocol {ours}" in error.value.message
    assert "update" in error.value.hint
    assert not client.alive


def test_protocol_mismatch_with_an_older_backend(tmp_path):
    """A backend that answers hello with another version (an old install) is refused clearly."""
    root = tmp_path / "old"
    (root / "backend").mkdir(parents=True)
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(textwrap.dedent("""
        import json, sys
        for line in sys.stdin:
            request = json.loads(line)
            print(json.dumps({"type": "hello", "id": request["id"], "protocol": 0}), flush=True)
    """))
    client = BackendClient(resolve_config(python=sys.executable, environ={}), backend_root=root)
    with pytest.raises(UserError) as error:
        client.start()
    assert error.value.code == "protocol_mismatch"
    assert "protocol 0" in error.value.message and "update" in error.value.hint
    assert not client.alive
