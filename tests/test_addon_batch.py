"""Generate for Selected's jobs as one (blender_addon/connection/batch.py) against the real backend service,
without Blender: sent together, followed as one, each ending on its own; the manifest it writes runs
the same jobs again with `python -m backend batch`."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from backend.batch import run_batch
from blender_addon.connection import batch as batch_job
from blender_addon.connection import config as backend_config
from blender_addon.connection import job
from blender_addon.connection.session import Session
from tests.conftest import ROOT
from tests.service_process import can_mount_tmpfs
from tests.test_addon_session import pump_until_finished
from tests.test_remote import _hiding

PATCH = {"engine": "patch", "variants": 2, "size": 64, "tile": "both", "tiled_preview": False, "preview_every": 0}


@pytest.fixture(scope="module")
def config(tiny_models):
    return backend_config.resolve_config(python=sys.executable, base=str(tiny_models["base"]),
                                         ip_adapter=str(tiny_models["ip_adapter"]), device="cpu", environ={})


@pytest.fixture
def session():
    s = Session()
    yield s
    s.stop()


def _jobs(tmp_path: Path, inputs: list[Path], **extra) -> list[dict]:
    """One job per input, each in a folder of its own holding a copy of its input (as the add-on makes them)."""
    tmp_path.mkdir(exist_ok=True)
    jobs = []
    for i, source in enumerate(inputs):
        folder = tmp_path / f"{i + 1:02d}-job"
        folder.mkdir()
        reference = folder / "reference.png"
        if source.exists():
            shutil.copyfile(source, reference)
        jobs.append({"input": str(reference), "output_dir": str(folder), **PATCH, "seed": 10 + 2 * i, **extra})
    return jobs


def test_three_jobs_sent_at_once_end_each_with_its_own_variants(session, config, color_texture_path, brick_path,
                                                                 tmp_path):
    jobs = _jobs(tmp_path, [color_texture_path, brick_path, color_texture_path])
    batch = batch_job.submit(session, config, str(ROOT), jobs, in_thread=True)
    assert session.busy and session.job is batch and batch.id == ""  # nothing is read before all are sent
    assert pump_until_finished(session) is batch
    assert batch.state == job.DONE and batch.fraction == 1.0 and batch.status_text() == "3 of 3 jobs ready"
    seeds = [[entry["parameters"]["seed"] for entry in t.files] for t in batch.trackers]
    assert seeds == [[10, 11], [12, 13], [14, 15]]
    for tracker, spec in zip(batch.trackers, jobs, strict=True):
        assert {Path(e["path"]).parent for e in tracker.files} == {Path(spec["output_dir"])}
    assert not session.busy


def test_a_bad_job_fails_alone(session, config, color_texture_path, tmp_path):
    jobs = _jobs(tmp_path, [color_texture_path, tmp_path / "missing.png", color_texture_path])
    batch = batch_job.submit(session, config, str(ROOT), jobs).run_to_end()
    assert [t.state for t in batch.trackers] == [job.DONE, job.FAILED, job.DONE]
    assert batch.trackers[1].error["code"] == "bad_input" and batch.trackers[1].files == []
    assert batch.state == job.FAILED and batch.status_text() == "2 of 3 jobs ready, 1 failed or cancelled"


def test_cancel_stops_the_running_job_and_the_queued_ones(session, config, color_texture_path, tmp_path):
    long = {"engine": "diffusion", "steps": 200, "variants": 4}
    jobs = _jobs(tmp_path, [color_texture_path] * 3, **long)
    batch = batch_job.submit(session, config, str(ROOT), jobs)
    batch.run_to_end(timeout=1.0)
    assert [t.state for t in batch.trackers] == [job.CANCELLED] * 3 and batch.state == job.CANCELLED
    assert not list(tmp_path.rglob("*-diffusion-*.png"))  # a cancelled job leaves no variants
    # pressing Cancel in the panel (the session's cancel) stops every job of a batch too
    batch_job.submit(session, config, str(ROOT), _jobs(tmp_path / "again", [color_texture_path] * 2, **long),
                     in_thread=True)
    session.cancel()
    assert pump_until_finished(session).state == job.CANCELLED


def test_the_manifest_makes_the_same_files_with_the_batch_command(session, color_texture_path, brick_path, tmp_path):
    config = backend_config.resolve_config(python=sys.executable, device="cpu", environ={})  # no default models
    batch_dir = tmp_path / "batch"
    batch_dir.mkdir()
    jobs = _jobs(batch_dir, [color_texture_path, brick_path])
    manifest = batch_job.write_manifest(batch_dir, jobs)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [(line["input"], line["output_dir"]) for line in lines] == [("01-job/reference.png", "01-job"),
                                                                       ("02-job/reference.png", "02-job")]
    with pytest.raises(FileExistsError):
        batch_job.write_manifest(batch_dir, jobs)  # never replaces a manifest
    batch = batch_job.submit(session, config, str(ROOT), jobs).run_to_end()
    assert batch.state == job.DONE
    summary = run_batch(manifest, tmp_path / "farm", progress=False)
    assert summary["done"] == 2 and summary["failed"] == 0
    for tracker, line in zip(batch.trackers, lines, strict=True):
        for entry in tracker.files:
            farm = tmp_path / "farm" / line["output_dir"] / Path(entry["path"]).name
            assert farm.read_bytes() == Path(entry["path"]).read_bytes()


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (see tests/test_remote.py)")
def test_a_batch_runs_on_a_backend_that_cannot_see_the_clients_files(session, color_texture_path, brick_path,
                                                                    tmp_path):
    folder = tmp_path / "client"
    jobs = _jobs(folder, [color_texture_path, brick_path])
    command = _hiding(folder, f"{shlex.quote(sys.executable)} -m backend serve --remote")
    remote = backend_config.resolve_config(python=sys.executable, command=command, environ={})
    batch = batch_job.submit(session, remote, str(ROOT), jobs).run_to_end(timeout=300)
    assert batch.state == job.DONE and session.hello["filesystem"]["shared"] is False
    local = batch_job.submit(session, backend_config.resolve_config(python=sys.executable, environ={}), str(ROOT),
                             _jobs(tmp_path / "local", [color_texture_path, brick_path])).run_to_end()
    for mine, theirs in zip(batch.trackers, local.trackers, strict=True):
        assert len(mine.files) == 2
        for a, b in zip(mine.files, theirs.files, strict=True):
            assert Path(a["path"]).parent == Path(mine.folder)  # downloaded into this machine's job folder
            with Image.open(a["path"]) as here, Image.open(b["path"]) as there:
                assert here.tobytes() == there.tobytes()  # the same pixels (the records name other folders)
            assert Path(a["parameters"]["reference"]) == Path(mine.folder) / "reference.png"  # the client's path


def test_all_materials_asks_with_the_count_and_the_time():
    from blender_addon.connection.batch import confirm_message

    first = confirm_message(12, None)
    assert "all 12 materials" in first and "12 Generates one after another" in first and "Cancel" in first
    assert "about 50 s" in confirm_message(10, 5.0) and "5.0 s a material" in confirm_message(10, 5.0)
    assert "about 8 min" in confirm_message(100, 5.0)
    assert "all 1 material of" in confirm_message(1, None)
