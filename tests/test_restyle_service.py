"""The `restyle` request through a real `python -m backend serve` subprocess on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service_process import tiny_model_service

TINY = dict(size=64, steps=2, seed=5)


@pytest.fixture(scope="module")
def service(tiny_models, tmp_path_factory):
    yield from tiny_model_service(tmp_path_factory.mktemp("service"), tiny_models)


def test_hello_lists_the_restyle_request(service):
    hello = service.ask("hello")
    assert {"restyle_prompt", "mask", "mask_points", "mask_mode", "input", "output_dir"} <= set(hello["restyle"]["fields"])
    assert hello["restyle"]["choices"] == {"mask_mode": ["keep-structure", "edit-inside"],
                                           "restyle_start": ["inverted", "noise"]}


def test_a_restyle_job_with_sam_points_end_to_end(service, tiny_models, color_texture_path, tmp_path):
    job = service.send("restyle", input=str(color_texture_path), output_dir=str(tmp_path), restyle_prompt="wet",
                       mask_points=[[40, 30], [100, 100, 0]], sam=str(tiny_models["sam"]), variants=2,
                       mask_mode="edit-inside", tiled_preview=True, **TINY)
    events = service.job_events(job)
    assert [events[0]["type"], events[-1]["type"]] == ["accepted", "result"], events
    progress = [e["step"] for e in events if e["type"] == "progress"]
    assert progress == list(range(1, 3 * TINY["steps"] + 1))  # inversion, reference branch, generated branch
    files = events[-1]["files"]
    assert [Path(f["path"]).name for f in files] == ["gravel_color-restyle-s5.png", "gravel_color-restyle-s6.png"]
    original = np.asarray(Image.open(color_texture_path).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
    for entry in files:
        assert Path(entry["mask"]) == Path(entry["path"]).with_name(Path(entry["path"]).stem + "-mask.png")
        with Image.open(entry["mask"]) as mask, Image.open(entry["path"]) as image:
            assert mask.size == image.size == (64, 64) and mask.mode == "L"
            assert json.loads(image.text["parameters"]) == entry["parameters"]
            outside = np.asarray(mask) == 0
            assert entry["parameters"]["restyle_prompt"] == "wet" and entry["parameters"]["appearance"] == "none"
            # far from the selection the input's pixels stay (edit-inside; feather reach 1 px at 64 px)
            far = outside & np.roll(outside, 1, 0) & np.roll(outside, -1, 0) & np.roll(outside, 1, 1) & np.roll(outside, -1, 1)
            far &= np.roll(np.roll(outside, 1, 0), 1, 1) & np.roll(np.roll(outside, -1, 0), -1, 1)
            far &= np.roll(np.roll(outside, 1, 0), -1, 1) & np.roll(np.roll(outside, -1, 0), 1, 1)
            assert np.array_equal(np.asarray(image)[far], original[far])


def test_bad_restyle_requests_are_refused_and_bad_masks_fail_the_job(service, tiny_models, color_texture_path,
                                                                    tmp_path):
    common = dict(input=str(color_texture_path), output_dir=str(tmp_path), **TINY)
    missing = service.ask("restyle", **common)
    assert missing["type"] == "error" and missing["code"] == "bad_request" and "restyle_prompt" in missing["message"]
    relative = service.ask("restyle", restyle_prompt="moss", mask="mask.png", **common)
    assert relative["code"] == "bad_request" and relative["message"].startswith("restyle 'mask'")
    no_sam = service.send("restyle", restyle_prompt="moss", mask_points=[[5, 3]], **common)
    final = service.job_events(no_sam)[-1]  # the default SAM is not downloaded in tests
    assert final["code"] == "models_missing" and "download-models --sam" in final["hint"]
    outside = service.send("restyle", restyle_prompt="moss", mask_points=[[500, 3]], sam=str(tiny_models["sam"]),
                           **common)
    final = service.job_events(outside)[-1]
    assert final["type"] == "error" and final["code"] == "bad_input" and "outside" in final["message"] and final["hint"]
    assert list(tmp_path.iterdir()) == []  # the failed job left nothing


def test_cancel_stops_a_running_restyle_job(service, color_texture_path, tmp_path):
    job = service.send("restyle", input=str(color_texture_path), output_dir=str(tmp_path), restyle_prompt="rust",
                       **TINY | {"steps": 40})
    service.until(lambda e: e["id"] == job and e["type"] == "progress")
    service.send("cancel", job=job)
    final = service.job_events(job)[-1]
    assert final["type"] == "cancelled" and final["stage"] == "running"
    assert final["stopped_step"] - final["cancel_step"] <= 1 and final["stopped_step"] < 40 * 2.8
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not __import__("tests.service_process", fromlist=["_"]).can_mount_tmpfs(),
                    reason="needs `unshare -m` and tmpfs mounts to hide the client's folder from the backend")
def test_a_remote_restyle_uploads_its_mask_and_downloads_the_mask_used(tiny_models, color_texture_path, tmp_path,
                                                                       monkeypatch):
    import shlex
    import sys

    from tests.test_remote import _client, _hiding

    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    folder = tmp_path / "client"
    folder.mkdir()
    source = folder / "in.png"
    source.write_bytes(Path(color_texture_path).read_bytes())
    painted = np.zeros((128, 128), np.uint8)
    painted[:, :64] = 255
    Image.fromarray(painted).save(folder / "mask.png")
    job = dict(restyle_prompt="rust", mask=str(folder / "mask.png"), mask_mode="edit-inside",
               base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), **TINY)
    results = {}
    for name, command in (("remote", _hiding(folder, f"{shlex.quote(sys.executable)} -m backend serve")),
                          ("local", None)):
        with _client(command, folder) as client:
            results[name] = client.wait(client.restyle(source, folder / f"{name}-job", **job), timeout=300)
            results[name]["shared"] = client.hello["filesystem"]["shared"]
    remote, local = results["remote"], results["local"]
    assert remote["type"] == local["type"] == "result" and remote["shared"] is False and local["shared"] is True
    for mine, theirs in zip(remote["files"], local["files"], strict=True):
        assert Path(mine["mask"]).parent == Path(mine["path"]).parent == folder / "remote-job"
        assert Path(mine["mask"]).read_bytes() == Path(theirs["mask"]).read_bytes()
        # the same pixels (the parameters text names the mask where each backend read it)
        assert np.array_equal(np.asarray(Image.open(mine["path"])), np.asarray(Image.open(theirs["path"])))
