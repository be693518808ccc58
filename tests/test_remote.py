"""A backend that cannot see the client's files (docs/guide/batch-and-remote.md, "Remote GPU"): the input is uploaded, the
results are downloaded, byte-identical to a local run; a connection cut mid-download leaves nothing.

The backend runs under `unshare -m` with an empty tmpfs mounted over the client's folder, so the
client's paths exist but show nothing to it (proved below with the same wrapper).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config
from tests.conftest import ROOT
from tests.service_process import can_mount_tmpfs

JOB = dict(engine="patch", size=128, variants=2, seed=11, tiled_preview=True)


pytestmark = pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root in a "
                                "Linux container) to hide the client's folder from the backend")


@pytest.fixture
def client_folder(tmp_path, color_texture_path, monkeypatch):
    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("TEXTURE_VARIANTS_BACKEND_COMMAND", raising=False)
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "in.png").write_bytes(Path(color_texture_path).read_bytes())
    return folder


def _hiding(folder: Path, command: str) -> str:
    """A command line that runs `command` where `folder` is an empty tmpfs (arguments appended go to it)."""
    inner = f"mount -t tmpfs none {shlex.quote(str(folder))} && exec {command} \"$@\""
    return f"unshare -m sh -c {shlex.quote(inner)} sh"


def _client(command: str | None, probe_dir: Path) -> BackendClient:
    client = BackendClient(resolve_config(python=sys.executable, command=command), backend_root=ROOT,
                           log=lambda line: None)
    client.probe_dir = str(probe_dir)
    return client


def _run(client: BackendClient, source: Path, out: Path) -> dict:
    with client:
        job = client.generate(source, out, **JOB)
        return client.wait(job, timeout=300) | {"shared": client.hello["filesystem"]["shared"]}


def test_a_backend_without_the_clients_files_gets_the_input_and_returns_identical_results(client_folder):
    source = client_folder / "in.png"
    serve = f"{shlex.quote(sys.executable)} -m backend serve"
    hidden = subprocess.run(shlex.split(_hiding(client_folder, "cat")) + [str(source)], capture_output=True)
    assert hidden.returncode != 0 and source.is_file()  # the backend's view: the client's file is not there

    remote = _client(_hiding(client_folder, serve), client_folder)
    remote_result = _run(remote, source, client_folder / "remote-job")
    local_result = _run(_client(None, client_folder), source, client_folder / "local-job")

    assert remote_result["type"] == local_result["type"] == "result", (remote_result, local_result)
    assert remote_result["shared"] is False and local_result["shared"] is True
    remote_files = [Path(entry[key]) for entry in remote_result["files"] for key in ("path", "tiled")]
    local_files = [Path(entry[key]) for entry in local_result["files"] for key in ("path", "tiled")]
    assert len(remote_files) == 4 and all(p.parent == client_folder / "remote-job" for p in remote_files)
    assert [p.name for p in remote_files] == [p.name for p in local_files]
    for mine, theirs in zip(remote_files, local_files, strict=True):
        assert mine.read_bytes() == theirs.read_bytes()
    assert [e["parameters"] for e in remote_result["files"]] == [e["parameters"] for e in local_result["files"]]
    assert not list((client_folder / "remote-job").glob(".*"))  # no temporary files left
    umask = os.umask(0o022)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in remote_files} == {0o666 & ~umask}  # as a local file, not 0600


def test_a_connection_cut_mid_download_leaves_no_file_and_says_so(client_folder):
    source = client_folder / "in.png"
    serve = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'cut_pipe.py'))} 3 " \
            f"{shlex.quote(sys.executable)} -m backend serve --remote"
    client = _client(_hiding(client_folder, serve), client_folder)
    client.download_chunk_bytes = 4096  # many chunks per file, so the cut falls inside one
    out = client_folder / "job"
    first = _run(client, source, out)
    assert first["type"] == "error" and first["code"] == "backend_died", first
    assert "could not be brought back" in first["message"]
    assert not out.exists()  # the folder the download made is gone with everything in it
    assert sorted(p.name for p in client_folder.iterdir()) == ["in.png"]
    with client:  # the next request reconnects
        assert client.start()["filesystem"]["shared"] is False


def _workspace_files(client: BackendClient) -> list[str] | None:
    """What the backend's workspace holds now (the test shares the backend's /tmp), or None when shared."""
    workspace = client.hello["filesystem"]["workspace"]
    return sorted(str(p.relative_to(workspace)) for p in Path(workspace).rglob("*")) if workspace else None


def test_a_failed_remote_job_releases_its_uploads(client_folder):
    source, broken = client_folder / "in.png", client_folder / "broken.png"
    broken.write_text("not an image")
    serve = f"{shlex.quote(sys.executable)} -m backend serve --remote"
    with _client(_hiding(client_folder, serve), client_folder) as client:
        job = client.generate(source, client_folder / "job", **JOB, maps={"roughness": str(broken)})
        failed = client.wait(job, timeout=300)
        assert failed["type"] == "error" and failed["code"] == "bad_input", failed
        deadline = time.monotonic() + 30  # an ended job's files are released on a thread of their own
        while _workspace_files(client) != ["jobs", "owner.pid", "uploads"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workspace_files(client) == ["jobs", "owner.pid", "uploads"]
    assert not (client_folder / "job").exists()


def _maps(folder: Path, source: Path) -> dict:
    """A roughness map (grey) and a normal map (RGB) made from the texture, beside it."""
    from PIL import Image, ImageOps

    with Image.open(source) as image:
        grey = ImageOps.grayscale(image.convert("RGB"))
        grey.save(folder / "in-roughness.png")
        Image.merge("RGB", (grey, ImageOps.invert(grey), Image.new("L", grey.size, 255))).save(folder / "in-normal.png")
    return {"roughness": str(folder / "in-roughness.png"), "normal": str(folder / "in-normal.png")}


def test_a_remote_job_with_maps_returns_every_map_byte_identical_to_a_local_run(client_folder):
    source = client_folder / "in.png"
    maps = _maps(client_folder, source)
    serve = f"{shlex.quote(sys.executable)} -m backend serve --remote"
    results, left = {}, {}
    for name, command in (("remote", _hiding(client_folder, serve)), ("local", None)):
        with _client(command, client_folder) as client:
            job = client.generate(source, client_folder / f"{name}-job", **JOB, maps=maps)
            results[name] = client.wait(job, timeout=300)
            left[name] = _workspace_files(client)
    remote, local = results["remote"], results["local"]
    assert left["remote"] == ["jobs", "owner.pid", "uploads"]  # released: the job folder and the three uploads are gone
    assert remote["type"] == local["type"] == "result", (remote, local)
    assert [sorted(e["maps"]) for e in remote["files"]] == [["normal", "roughness"]] * 2
    for mine, theirs in zip(remote["files"], local["files"], strict=True):
        for name in ("normal", "roughness"):
            here, there = Path(mine["maps"][name]), Path(theirs["maps"][name])
            assert here.parent == client_folder / "remote-job" and here.name == there.name
            assert here.read_bytes() == there.read_bytes()
        assert Path(mine["path"]).read_bytes() == Path(theirs["path"]).read_bytes()
    assert [e["parameters"] for e in remote["files"]] == [e["parameters"] for e in local["files"]]
