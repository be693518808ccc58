"""`serve --remote` confinement, completed: paths compared resolved, uploads in progress unusable,
job folders only under jobs/, over-long names and oversized chunks refused. Through the real service."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from backend.service.protocol import CHUNK_BYTES
from tests.service_process import ServiceProcess


@pytest.fixture
def remote(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = ServiceProcess(tmp_path, "--remote", env={"TMPDIR": str(temp)})
    workspace = Path(proc.ask("hello")["filesystem"]["workspace"])
    yield proc, workspace
    assert proc.stop() == 0


def _begin(proc, data: bytes) -> str:
    ack = proc.ask("upload_begin", name="/client/in.png", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert ack["type"] == "ack", ack
    return ack["upload"]


def _chunk(proc, upload, offset: int, data: bytes) -> None:
    proc.send("upload_chunk", upload=upload, offset=offset, data=base64.b64encode(data).decode())


def _uploaded(proc, path: Path) -> str:
    data = path.read_bytes()
    upload = _begin(proc, data)
    for offset in range(0, len(data), CHUNK_BYTES):
        _chunk(proc, upload, offset, data[offset:offset + CHUNK_BYTES])
    ack = proc.ask("upload_end", upload=upload)
    assert ack["type"] == "ack", ack
    return ack["path"]


@pytest.mark.parametrize(("decoded", "code"), [(CHUNK_BYTES + 1, "bad_transfer"), (CHUNK_BYTES + 10, "bad_request"),
                                               (2 * CHUNK_BYTES, "bad_request")])
def test_a_chunk_over_the_limit_in_decoded_bytes_is_refused_and_closes_its_upload(remote, decoded, code):
    """262,145 bytes fit in the base64 length of 262,144 (the service decodes and counts); longer base64
    is refused while the line is parsed. Either way the upload is closed and its bytes removed."""
    proc, workspace = remote
    data = os.urandom(8 * CHUNK_BYTES)
    upload = _begin(proc, data)
    _chunk(proc, upload, 0, data[:1000])
    proc.send_line(f'{{"id": "big", "type": "upload_chunk", "upload": "{upload}", "offset": 1000, "data": '
                   f'"{base64.b64encode(data[1000:1000 + decoded]).decode()}"}}'.encode())
    refused = proc.until(lambda e: e["id"] == "big")[-1]
    assert refused["code"] == code, refused
    assert not list((workspace / "uploads").rglob("*.part"))  # its bytes are gone at once
    end = proc.ask("upload_end", upload=upload)
    assert end["code"] == "unknown_upload", end  # closed by the refused chunk


@pytest.mark.parametrize("bad", [{"offset": -1}, {"offset": "0"}, {"data": 7}, {"extra": 1}])
def test_every_bad_chunk_closes_its_upload(remote, bad):
    proc, workspace = remote
    data = os.urandom(2000)
    upload = _begin(proc, data)
    _chunk(proc, upload, 0, data[:1000])
    refused = proc.ask("upload_chunk", **{"upload": upload, "offset": 1000,
                                          "data": base64.b64encode(data[1000:]).decode()} | bad)
    assert refused["code"] == "bad_request", refused
    assert not list((workspace / "uploads").rglob("*.part"))
    assert proc.ask("upload_end", upload=upload)["code"] == "unknown_upload"


def test_an_upload_in_progress_can_be_neither_downloaded_nor_used(remote, color_texture_path):
    proc, workspace = remote
    data = Path(color_texture_path).read_bytes()
    upload = _begin(proc, data)
    _chunk(proc, upload, 0, data[:1000])
    part = next((workspace / "uploads").rglob("*.part"))
    download = proc.ask("download", path=str(part))
    assert download["type"] == "error" and download["code"] == "bad_request", download
    job = proc.ask("generate", input=str(part), output_dir=str(workspace / "jobs" / "a"), engine="patch", size=64)
    assert job["type"] == "error" and job["code"] == "bad_request" and "in progress" in job["message"], job


@pytest.mark.parametrize("where", ["", "uploads", "jobs", "uploads/1"])
def test_output_dir_must_be_a_job_folder_of_the_workspace(remote, color_texture_path, where):
    proc, workspace = remote
    source = _uploaded(proc, Path(color_texture_path))
    answer = proc.ask("generate", input=source, output_dir=str(workspace / where) if where else str(workspace),
                      engine="patch", size=64)
    assert answer["type"] == "error" and answer["code"] == "outside_workspace", answer


def test_releasing_a_running_jobs_folder_through_an_alias_is_busy(remote, color_texture_path):
    proc, workspace = remote
    source = _uploaded(proc, Path(color_texture_path))
    alias = f"{workspace}/uploads/../jobs/a"
    job = proc.send("generate", input=source, output_dir=alias, engine="patch", size=2048, variants=16, seed=1)
    proc.until(lambda e: e["id"] == job and e["type"] == "progress")
    for path in (f"{workspace}/jobs/a", alias):
        answer = proc.ask("release", path=path)
        assert answer["type"] == "error" and answer["code"] == "busy", answer
    proc.ask("cancel", job=job)
    proc.until(lambda e: e["id"] == job and e["type"] == "cancelled")


def test_an_over_long_release_name_is_bad_request_not_internal(remote):
    proc, workspace = remote
    answer = proc.ask("release", path=f"{workspace}/jobs/{'x' * 600}")
    assert answer["type"] == "error" and answer["code"] == "bad_request", answer


def test_a_map_outside_the_workspace_gets_one_answer_whether_it_exists_or_not(remote, color_texture_path, tmp_path):
    proc, workspace = remote
    source = _uploaded(proc, Path(color_texture_path))
    answers = [proc.ask("generate", input=source, output_dir=str(workspace / "jobs" / "m"), engine="patch", size=64,
                        maps={"roughness": path}) for path in (str(color_texture_path), str(tmp_path / "no.png"))]
    assert [(a["type"], a["code"]) for a in answers] == [("error", "outside_workspace")] * 2, answers


def test_a_model_path_outside_the_workspace_needs_a_models_folder(tmp_path, color_texture_path):
    models = tmp_path / "models"
    (models / "sd15").mkdir(parents=True)
    temp = tmp_path / "tmp"
    temp.mkdir()
    for allowance, expected in (((), "error"), (("--models", str(models)), "accepted")):
        proc = ServiceProcess(tmp_path, "--remote", *allowance, env={"TMPDIR": str(temp)})
        try:
            workspace = Path(proc.ask("hello")["filesystem"]["workspace"])
            source = _uploaded(proc, Path(color_texture_path))
            job = dict(input=source, engine="patch", size=64)
            answer = proc.ask("generate", output_dir=str(workspace / "jobs" / "a"), base=str(models / "sd15"), **job)
            assert answer["type"] == expected, (allowance, answer)
            if expected == "error":
                assert answer["code"] == "outside_workspace" and "--models" in answer["hint"]
            hub = proc.ask("generate", output_dir=str(workspace / "jobs" / "b"), base="org/some-model", **job)
            assert hub["type"] == "accepted", hub  # a hub id is never a path
        finally:
            assert proc.stop() == 0
