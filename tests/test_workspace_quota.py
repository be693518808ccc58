"""`serve --remote`'s workspace cannot fill the server's disk or outlive its service: a budget over
uploads, open uploads and job outputs (`no_space` with the numbers, nothing written), a full disk is
`no_space` (a real 1 MiB tmpfs), SIGHUP ends the service like SIGTERM, and the workspaces of services
killed with SIGKILL are swept by the next start. All through the real service process."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.service_process import ServiceProcess, can_mount_tmpfs, tmpfs_wrap

MB = 1 << 20
CHUNK = 256 << 10


def _remote(tmp_path: Path, *args: str, wrap: tuple[str, ...] = ()) -> tuple[ServiceProcess, Path]:
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    proc = ServiceProcess(tmp_path, "--remote", *args, env={"TMPDIR": str(temp)}, wrap=wrap)
    workspace = Path(proc.ask("hello")["filesystem"]["workspace"])
    return proc, workspace


def _upload(proc: ServiceProcess, data: bytes) -> dict:
    """Send `data` as one upload; the first error event, or the upload_end ack."""
    begin = proc.ask("upload_begin", name="/client/in.png", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if begin["type"] == "error":
        return begin
    for offset in range(0, len(data), CHUNK):
        proc.send("upload_chunk", upload=begin["upload"], offset=offset,
                  data=base64.b64encode(data[offset:offset + CHUNK]).decode())
    end = proc.send("upload_end", upload=begin["upload"])
    events = proc.until(lambda e: e["id"] == end)  # a refused chunk answers before the end does
    return next((e for e in events if e["type"] == "error"), events[-1])


def _bytes_in(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "owner.pid")


def test_uploads_over_the_workspace_budget_are_no_space_and_write_nothing(tmp_path):
    proc, workspace = _remote(tmp_path, "--max-workspace-mb", "2")
    try:
        refused = _upload(proc, os.urandom(3 * MB))
        assert refused["type"] == "error" and refused["code"] == "no_space", refused
        assert "2 MB budget" in refused["message"] and "3.0 MB more" in refused["message"]
        assert _bytes_in(workspace) == 0
        kept = _upload(proc, os.urandom(MB + MB // 2))
        assert kept["type"] == "ack", kept
        second = _upload(proc, os.urandom(MB))  # finished uploads count
        assert second["code"] == "no_space" and _bytes_in(workspace) == MB + MB // 2
        assert proc.ask("release", path=kept["path"])["removed"] is True
        assert _upload(proc, os.urandom(MB))["type"] == "ack"  # released space is free again
    finally:
        assert proc.stop() == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root in a Linux container)")
def test_a_full_disk_during_an_upload_is_no_space_and_the_part_is_removed(tmp_path):
    proc, workspace = _remote(tmp_path, wrap=tmpfs_wrap(tmp_path / "tmp", "size=1m"))
    try:
        full = _upload(proc, os.urandom(3 * MB))
        assert full["type"] == "error" and full["code"] == "no_space", full
        assert "No space left" in full["message"]
        assert proc.ask("status")["type"] == "status"  # the service goes on
        assert _upload(proc, os.urandom(100_000))["type"] == "ack"  # the failed upload's bytes are gone
    finally:
        assert proc.stop() == 0


def test_sighup_ends_the_service_like_sigterm_and_removes_its_workspace(tmp_path):
    proc, workspace = _remote(tmp_path)
    assert _upload(proc, os.urandom(1000))["type"] == "ack" and workspace.is_dir()
    proc.popen.send_signal(signal.SIGHUP)
    assert proc.wait() == 0
    assert not workspace.exists()


def test_the_workspace_of_a_killed_service_is_swept_at_the_next_start_a_live_ones_is_kept(tmp_path):
    killed, stale = _remote(tmp_path)
    assert _upload(killed, os.urandom(MB))["type"] == "ack"
    killed.popen.kill()
    killed.wait()
    assert stale.is_dir() and _bytes_in(stale) == MB  # SIGKILL: no clean-up of its own
    live = stale.parent / "texture-variants-live"
    live.mkdir()
    (live / "owner.pid").write_text(str(os.getpid()))  # this test process: alive
    foreign = stale.parent / "texture-variants-unowned"
    foreign.mkdir()
    proc, workspace = _remote(tmp_path)
    try:
        assert not stale.exists() and live.is_dir() and foreign.is_dir() and workspace.is_dir()
    finally:
        assert proc.stop() == 0


def test_an_abandoned_upload_expires_and_its_bytes_are_removed(tmp_path):
    import time

    proc, workspace = _remote(tmp_path, "--upload-idle-s", "1")
    try:
        data = os.urandom(2 * CHUNK)
        begin = proc.ask("upload_begin", name="/client/a.png", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        proc.send("upload_chunk", upload=begin["upload"], offset=0, data=base64.b64encode(data[:CHUNK]).decode())
        assert proc.ask("status")["type"] == "status" and _bytes_in(workspace) == CHUNK
        time.sleep(1.5)
        assert _upload(proc, os.urandom(1000))["type"] == "ack"  # the next begin closes the abandoned one
        assert not list((workspace / "uploads").rglob("*.part"))
        late = proc.ask("upload_end", upload=begin["upload"])
        assert late["code"] == "unknown_upload", late
    finally:
        assert proc.stop() == 0


def test_a_job_whose_files_would_go_over_the_budget_is_no_space_and_leaves_nothing(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    noise = io.BytesIO()  # noise: its variants do not compress, 512² of them are about 0.75 MB each
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(noise, "PNG")
    proc, workspace = _remote(tmp_path, "--max-workspace-mb", "1")
    try:
        uploaded = _upload(proc, noise.getvalue())
        assert uploaded["type"] == "ack", uploaded
        held = _bytes_in(workspace)
        big = proc.job_events(proc.send("generate", input=uploaded["path"], output_dir=str(workspace / "jobs" / "big"),
                                        engine="patch", size=512, variants=2, seed=1))[-1]
        assert big["type"] == "error" and big["code"] == "no_space", big  # before: a result over the budget
        assert "1 MB budget" in big["message"] and "MB of its" in big["message"], big
        assert _bytes_in(workspace) == held and not (workspace / "jobs" / "big").exists()  # the job's files are gone
        small = proc.job_events(proc.send("generate", input=uploaded["path"],
                                          output_dir=str(workspace / "jobs" / "small"), engine="patch", size=64))[-1]
        assert small["type"] == "result", small  # the service goes on; a job that fits runs
    finally:
        assert proc.stop() == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root in a Linux container)")
def test_hello_on_a_full_disk_is_no_space_and_leaves_no_ownerless_workspace(tmp_path):
    small = tmp_path / "tmp"
    # two inodes: the root and one more, so the workspace folder is made and its owner file is not (ENOSPC)
    proc = ServiceProcess(tmp_path, "--remote", env={"TMPDIR": str(small)}, wrap=tmpfs_wrap(small, "size=64k,nr_inodes=2"))
    inside = Path(f"/proc/{proc.popen.pid}/root") / small.relative_to("/")
    try:
        hello = proc.ask("hello")
        assert hello["type"] == "error" and hello["code"] == "no_space", hello  # before: internal
        assert list(inside.iterdir()) == []  # no workspace left without its owner file
        assert proc.ask("status")["type"] == "status"
    finally:
        assert proc.stop() == 0
