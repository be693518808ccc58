"""`python -m backend batch`: a manifest of patch-engine jobs, locally and on a local Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from backend import batch
from backend.api import generate
from backend.cli import main
from backend.params import GenerationParams

JOB = {"engine": "patch", "size": 64, "variants": 1, "tiled_preview": True}


@pytest.fixture
def manifest(tmp_path, color_texture_path, brick_path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "color.png").write_bytes(Path(color_texture_path).read_bytes())
    (folder / "brick.png").write_bytes(Path(brick_path).read_bytes())
    lines = [{"input": name, "seed": seed, **JOB} for seed in (1, 2, 3) for name in ("color.png", "brick.png")]
    lines[5]["output_dir"] = "named/brick"
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_a_local_batch_runs_every_job_writes_markers_and_a_rerun_does_nothing(manifest, tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (6, 0, 0)
    files = _outputs(out)
    assert len(files) == 12 and "named/brick/brick-patch-s3.png" in files
    for record in summary["records"]:
        assert batch.completed(record["folder"])["files"] == record["files"]
    # the same pixels as a direct run with the same seed
    direct = generate(str(manifest.parent / "color.png"), GenerationParams.build(seed=2, engine="patch", size=64))[0]
    assert Image.open(out / "0003-color" / "color-patch-s2.png").tobytes() == direct.tobytes()

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = batch.run_batch(manifest, out, progress=False)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 6, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    assert not (out / batch.STAGING).exists()


def test_a_bad_input_fails_alone_and_is_reported_with_its_code(manifest, tmp_path):
    lines = manifest.read_text().splitlines()
    (manifest.parent / "broken.png").write_bytes(b"not an image")
    lines[2] = json.dumps({"input": "broken.png", "seed": 1, **JOB})
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (5, 1)
    (failed,) = summary["failed_jobs"]
    assert failed["line"] == 3 and failed["code"] == "bad_input" and failed["hint"]
    assert not Path(failed["folder"]).exists()  # nothing of the failed job is left
    assert len(_outputs(out)) == 10


def test_a_ray_batch_with_two_cpu_actors_gives_the_same_bytes_as_a_local_one(manifest, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]' or scripts/setup --ray)")
    local, remote = tmp_path / "local", tmp_path / "ray"
    batch.run_batch(manifest, local, progress=False)
    batch.start_ray(num_cpus=2)
    try:
        assert ray.cluster_resources().get("GPU", 0) == 0
        summary = batch.run_batch(manifest, remote, use_ray=True, workers=2, progress=False)
        pids = {record["pid"] for record in summary["records"]}
    finally:
        ray.shutdown()
    assert (summary["done"], summary["failed"]) == (6, 0)
    assert len(pids) == 2  # two actors served the six jobs
    assert _outputs(remote) == _outputs(local) and len(_outputs(local)) == 12
