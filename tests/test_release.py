"""The `release` request (docs/PROTOCOL.md): a remote job's files leave the service's workspace once the
client has them, and nothing outside the job folders and uploads can be deleted through it."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from backend.service.server import Service
from tests.service_process import LineSink


@pytest.fixture
def service():
    service = Service(LineSink(), remote=True)
    yield service
    service.runner.stop(30)
    service.workspace.cleanup()


def events(service, after: int = 0) -> list[dict]:
    return [json.loads(line) for line in service._out.lines[after:]]


def ask(service, request_id: str, kind: str, **fields) -> dict:
    """Send a request; return the first event answering it that ends it (ack, result, error, ...)."""
    seen = len(service._out.lines)
    service.handle(json.dumps({"id": request_id, "type": kind, **fields}).encode())
    deadline = time.monotonic() + 60  # jobs answer from the worker thread
    while time.monotonic() < deadline:
        for event in events(service, seen):
            if event["id"] == request_id and event["type"] not in ("accepted", "progress", "chunk"):
                return event
        time.sleep(0.01)
    raise AssertionError(f"no answer to {request_id}")


def upload(service, path: Path, name: str) -> str:
    data = path.read_bytes()
    ask(service, name, "upload_begin", name=str(path), size=len(data), sha256=hashlib.sha256(data).hexdigest())
    service.handle(json.dumps({"id": f"{name}.0", "type": "upload_chunk", "upload": name, "offset": 0,
                               "data": base64.b64encode(data).decode()}).encode())
    return ask(service, f"{name}.end", "upload_end", upload=name)["path"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_hello_lists_release_among_the_requests(service):
    hello = ask(service, "h", "hello")
    assert "release" in hello["requests"] and "download" in hello["requests"]


def test_release_removes_a_finished_jobs_folder_and_its_upload_and_a_second_release_is_harmless(
        service, color_texture_path):
    workspace = Path(ask(service, "h", "hello")["filesystem"]["workspace"])
    remote_input = upload(service, color_texture_path, "u1")
    job_dir = f"{workspace}/jobs/j1"
    result = ask(service, "j1", "generate", input=remote_input, output_dir=job_dir, engine="patch", size=64,
                 variants=2, seed=3, tiled_preview=True)
    assert result["type"] == "result" and len(_files(Path(job_dir))) == 5  # 2 variants, 2 tiled, the marker
    assert _files(workspace) != ["jobs", "owner.pid", "uploads"]

    first = ask(service, "r1", "release", path=job_dir)
    assert first == {"type": "ack", "id": "r1", "request": "release", "path": job_dir, "removed": True}
    assert ask(service, "r2", "release", path=remote_input)["removed"] is True
    assert _files(workspace) == ["jobs", "owner.pid", "uploads"]  # nothing of the job is left
    again = [ask(service, f"r{3 + i}", "release", path=path) for i, path in enumerate((job_dir, remote_input))]
    assert [(e["type"], e["removed"]) for e in again] == [("ack", False), ("ack", False)]


def test_release_refuses_every_path_but_a_job_folder_or_an_upload(service, color_texture_path, tmp_path):
    workspace = Path(ask(service, "h", "hello")["filesystem"]["workspace"])
    remote_input = upload(service, color_texture_path, "u1")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (workspace / "jobs" / "link").symlink_to(victim, target_is_directory=True)
    (workspace / "jobs" / "j1").mkdir()
    (workspace / "jobs" / "j1" / "a.png").write_bytes(b"x")
    refused = [str(workspace), f"{workspace}/jobs", f"{workspace}/uploads", f"{workspace}/jobs/../uploads",
               f"{workspace}/jobs/j1/a.png", str(Path(remote_input).parent), f"{workspace}/jobs/link",
               str(victim), str(victim / "keep.txt"), f"{tmp_path}/jobs/j1", "/"]
    for i, path in enumerate(refused):
        answer = ask(service, f"x{i}", "release", path=path)
        assert (answer["type"], answer["code"]) == ("error", "outside_workspace"), (path, answer)
    assert ask(service, "rel", "release", path="jobs/j1")["code"] == "bad_request"  # not absolute
    assert (victim / "keep.txt").read_text() == "mine"
    assert Path(remote_input).is_file() and (workspace / "jobs" / "j1" / "a.png").is_file()


def test_release_of_what_a_queued_or_running_job_uses_is_busy(service, color_texture_path):
    workspace = Path(ask(service, "h", "hello")["filesystem"]["workspace"])
    remote_input = upload(service, color_texture_path, "u1")
    started, finish = threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        started.set()
        finish.wait(60)
        return []

    service.runner._generate = slow
    job_dir = f"{workspace}/jobs/j1"
    service.handle(json.dumps({"id": "j1", "type": "generate", "input": remote_input, "output_dir": job_dir,
                               "engine": "patch"}).encode())
    assert started.wait(60)
    for i, path in enumerate((job_dir, remote_input)):
        assert ask(service, f"r{i}", "release", path=path)["code"] == "busy"
    assert Path(remote_input).is_file()
    finish.set()
    deadline = time.monotonic() + 60
    while service.runner.is_active("j1") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ask(service, "r3", "release", path=remote_input) == {"type": "ack", "id": "r3", "request": "release",
                                                                  "path": remote_input, "removed": True}
