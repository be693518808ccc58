"""A finished-looking file means a finished job: a service job stages its files and moves them into the
job folder with a completion marker last; a service killed (SIGKILL) while writing or moving results
leaves nothing that looks finished once the next service has started, and never touches the user's
own files; a full disk during a job is `no_space` with the numbers and leaves nothing. All through
the real service process (a pause injected by a `sitecustomize` hook, a real small tmpfs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.service_process import ServiceProcess, can_mount_tmpfs, tmpfs_wrap

JOB = dict(engine="patch", size=96, seed=3, variants=2, derive=["height", "roughness"], tiled_preview=True)

# Loaded at the service's start: after the first link of a result PNG into the staging folder
# ("stage") or out of it into the job folder ("move"), say so in a flag file and hang until killed.
HOOK = '''
import os, time
_link, _mode, _flag = os.link, os.environ["TV_TEST_PAUSE"], os.environ["TV_TEST_FLAG"]
def link(src, dst, *args, **kwargs):
    _link(src, dst, *args, **kwargs)
    dst = os.fsdecode(dst)
    staged = os.sep + ".staging-" in dst
    if dst.endswith(".png") and "-preview-" not in dst and staged == (_mode == "stage"):
        open(_flag, "w").close()
        time.sleep(600)
os.link = link
'''


def _hooked(tmp_path: Path, mode: str) -> tuple[ServiceProcess, Path]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    flag = tmp_path / "paused"
    wrap = ("env", f"PYTHONPATH={hook}:{ROOT}", f"TV_TEST_PAUSE={mode}", f"TV_TEST_FLAG={flag}")
    return ServiceProcess(tmp_path, wrap=wrap), flag


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode", ["stage", "move"])
def test_sigkill_while_writing_results_leaves_nothing_finished_looking_after_the_next_start(tmp_path, mode,
                                                                                            color_texture_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / "mine.png").write_bytes(b"the user's own file")  # a folder the job shares with the user
    proc, flag = _hooked(tmp_path, mode)
    proc.send("generate", input=str(color_texture_path), output_dir=str(out), **JOB)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.popen.poll() is None and time.monotonic() < deadline, proc.stderr_tail()
        time.sleep(0.05)
    proc.popen.kill()
    proc.wait()
    left = _files(out)
    records = list((proc.log_dir / "jobs-in-progress").glob("*.json"))
    assert len(records) == 1  # the killed job's record of its staging folder
    assert not list(out.glob("*.done.json"))  # no marker in the job folder: not a finished job
    if mode == "stage":  # every result is still hidden in the staging folder
        assert [name for name in left if not name.startswith(".staging-")] == ["mine.png"], left
    else:  # a variant was moved in already, without its marker
        assert any(not name.startswith(".staging-") and name != "mine.png" for name in left), left

    started = time.monotonic()
    after = ServiceProcess(tmp_path)
    assert after.ask("hello")["type"] == "hello"
    cleaned_in = time.monotonic() - started
    assert _files(out) == ["mine.png"] and (out / "mine.png").read_bytes() == b"the user's own file"
    assert not list((proc.log_dir / "jobs-in-progress").glob("*.json"))
    assert after.stop() == 0
    assert "left unfinished" in (proc.log_dir / "service.log").read_text()
    assert cleaned_in < 30  # only a guard: the clean-up is part of a normal start


def test_a_finished_job_has_its_marker_and_survives_the_next_start(tmp_path, color_texture_path):
    out = tmp_path / "job"
    proc = ServiceProcess(tmp_path)
    result = proc.job_events(proc.send("generate", input=str(color_texture_path), output_dir=str(out), **JOB))[-1]
    assert result["type"] == "result", result
    proc.popen.kill()  # even a kill right after the result event changes nothing
    proc.wait()
    marker, = out.glob(".job-*.done.json")
    listed = json.loads(marker.read_text())["files"]
    assert listed == result["files"] and len(listed) == 2
    names = _files(out)
    after = ServiceProcess(tmp_path)
    assert after.ask("hello")["type"] == "hello" and after.stop() == 0
    assert _files(out) == names and not any(name.startswith(".staging-") for name in names)
    assert all(Path(p).is_file() for entry in listed for p in (entry["path"], entry["tiled"], *entry["maps"].values()))


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root in a Linux container)")
def test_a_full_disk_during_a_job_is_no_space_with_the_numbers_and_leaves_nothing(tmp_path, color_texture_path):
    disk = tmp_path / "disk"
    proc = ServiceProcess(tmp_path, wrap=tmpfs_wrap(disk, "size=256k"))
    inside = Path(f"/proc/{proc.popen.pid}/root") / disk.relative_to("/")  # the tmpfs, seen from the service
    try:
        full = proc.job_events(proc.send("generate", input=str(color_texture_path), output_dir=str(disk / "job"),
                                         **JOB | {"size": 512}))[-1]
        assert full["type"] == "error" and full["code"] == "no_space", full  # before: bad_output
        assert "No space left" in full["message"] and "MB free of 0.2 MB on that disk" in full["message"], full
        assert _files(inside) == []  # no staged file, no temporary, no job folder
        small = proc.job_events(proc.send("generate", input=str(color_texture_path), output_dir=str(disk / "job"),
                                          engine="patch", size=64, seed=1))[-1]
        assert small["type"] == "result", small  # the service goes on
        assert _files(inside) == ["job", "job/.job-t2.done.json", "job/gravel_color-patch-s1.png"]
    finally:
        assert proc.stop() == 0


def test_a_records_folder_that_cannot_be_written_does_not_fail_the_job(tmp_path, color_texture_path):
    from backend.api import generate
    from backend.params import GenerationParams
    from backend.service.jobs import Job, run_job

    blocked = tmp_path / "records"
    blocked.write_text("a file where the records folder should be")
    job = Job(id="j", input=str(color_texture_path), output_dir=str(tmp_path / "out"),
              params=GenerationParams.build({}, engine="patch", size=64, seed=1))
    final = run_job(job, generate, records=blocked)
    assert final["type"] == "result", final
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".job-j.done.json", "gravel_color-patch-s1.png"]
