"""`python -m backend batch` through the real subprocess with real manifests: a resume re-runs exactly
what was not done from the same line; lines sharing a folder are refused before anything runs; one
batch at a time per --out; bad lines are recorded and the rest run; the summary is always written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

JOB = {"input": "in.png", "engine": "patch", "size": 64}


@pytest.fixture
def home(tmp_path, color_texture_path) -> Path:
    (tmp_path / "in.png").write_bytes(Path(color_texture_path).read_bytes())
    return tmp_path


def _batch(manifest: Path, out: Path, wait: bool = True):
    process = subprocess.Popen([sys.executable, "-m", "backend", "batch", str(manifest), "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout.decode() + stderr.decode()


def _write(manifest: Path, *lines) -> Path:
    manifest.write_bytes(b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
                                  for line in lines))
    return manifest


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _states(out: Path) -> dict[int, str]:
    return {r["line"]: r["state"] for r in _summary(out)["records"]}


def test_lines_sharing_an_output_dir_are_refused_before_any_job_runs(home):
    manifest = _write(home / "m.jsonl", JOB | {"seed": 1, "output_dir": "same"}, JOB | {"seed": 2, "output_dir": "same"},
                      JOB | {"seed": 3})
    code, said = _batch(manifest, home / "out")
    assert code == 1 and _states(home / "out") == {1: "failed", 2: "failed", 3: "done"}
    assert "lines 1, 2 share the output_dir" in said
    assert not (home / "out" / "same").exists()
    assert _batch(manifest, home / "out")[0] == 1 and _states(home / "out")[1] == "failed"  # never "skipped"


def test_a_line_edited_since_its_run_is_run_again_and_replaces_the_batchs_own_folder(home):
    manifest = _write(home / "m.jsonl", JOB | {"seed": 1, "output_dir": "a"}, JOB | {"seed": 2, "output_dir": "b"})
    assert _batch(manifest, home / "out")[0] == 0
    untouched = (home / "out" / "b" / ".done.json").read_bytes()
    _write(manifest, JOB | {"seed": 9, "output_dir": "a"}, JOB | {"seed": 2, "output_dir": "b"})
    assert _batch(manifest, home / "out")[0] == 0
    assert _states(home / "out") == {1: "done", 2: "skipped"}
    marker = json.loads((home / "out" / "a" / ".done.json").read_text())
    assert [f["parameters"]["seed"] for f in marker["files"]] == [9]
    assert sorted(p.name for p in (home / "out" / "a").glob("*.png")) == [marker["files"][0]["path"].rsplit("/", 1)[-1]]
    assert (home / "out" / "b" / ".done.json").read_bytes() == untouched
    assert _batch(manifest, home / "out")[0] == 0 and _states(home / "out") == {1: "skipped", 2: "skipped"}


def test_bad_lines_are_recorded_and_the_rest_run(home):
    manifest = _write(home / "m.jsonl", JOB | {"seed": 1}, b'{"input": "\xff.png"}', b"{not json",
                      JOB | {"seed": 2, "output_dir": "x" * 300}, JOB | {"seed": 3, "steps": -1}, JOB | {"seed": 4})
    code, said = _batch(manifest, home / "out")
    assert code == 1 and "Traceback" not in said
    summary = _summary(home / "out")
    assert _states(home / "out") == {1: "done", 2: "failed", 3: "failed", 4: "failed", 5: "failed", 6: "done"}
    assert {r["line"]: r["code"] for r in summary["failed_jobs"]} == {2: "bad_request", 3: "bad_request",
                                                                       4: "bad_request", 5: "bad_request"}
    assert "UTF-8" in summary["failed_jobs"][0]["message"] and "200 bytes" in summary["failed_jobs"][2]["message"]


def test_a_second_batch_on_the_same_out_is_refused_and_the_first_finishes_every_job(home):
    manifest = _write(home / "m.jsonl", *(JOB | {"seed": i, "size": 256} for i in range(4)))
    first = _batch(manifest, home / "out", wait=False)
    lock, deadline = home / "out" / ".batch.lock", time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.05)  # its pid is written once the lock is held
    os.kill(first.pid, signal.SIGSTOP)  # held still, so it cannot finish before the second one asks
    try:
        code, said = _batch(manifest, home / "out")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert code != 0 and "another batch is running on" in said and f"pid {first.pid}" in said
    assert first.wait(600) == 0
    assert _summary(home / "out")["done"] == 4
    assert _batch(manifest, home / "out")[0] == 0 and _summary(home / "out")["skipped"] == 4
