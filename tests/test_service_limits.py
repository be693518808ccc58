"""The service against hostile or clumsy input, through a real `python -m backend serve` (issue #17).

One test (or a few) per case: inputs that are not regular files or declare a huge size, stop signals
mid-job, the error table (disk limits, unencodable paths, bad pickles), the queue bound and the
`status` summary, the event-line limit, `allow_pickle` as a start option, and the job folder.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import OUTPUT_HINT
from backend.service.protocol import MAX_EVENT_BYTES
from tests.service_process import ServiceProcess, tiny_model_service

TINY = dict(engine="diffusion", size=64, steps=2, seed=11)
PATCH = dict(engine="patch", size=64, seed=3)
MAX_QUEUE = 12


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid RGB PNG of `width` x `height` black pixels, written without holding it in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(6)
    rows = bytes((1 + 3 * width) * 500)  # 500 rows: filter byte 0 and zero samples
    body = b"".join(compressor.compress(rows) for _ in range(height // 500))
    body += compressor.compress(bytes((1 + 3 * width) * (height % 500))) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def service(tiny_models, tmp_path_factory):
    for proc in tiny_model_service(tmp_path_factory.mktemp("limits"), tiny_models, "--max-queue", str(MAX_QUEUE)):
        yield proc
    assert proc.longest_line <= MAX_EVENT_BYTES


def _final(proc: ServiceProcess, job: str) -> dict:
    return proc.job_events(job)[-1]


def _drain(proc: ServiceProcess) -> list[dict]:
    events = []
    while (event := proc.next_event(30)) is not None:
        events.append(event)
    return events


# --- 1. a FIFO (or any non-regular file) as input -------------------------------------------------

def test_a_fifo_input_is_refused_at_once_the_next_job_runs_and_shutdown_is_fast(tmp_path, color_texture_path):
    proc = ServiceProcess(tmp_path)
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    started = time.monotonic()
    bad = proc.send("generate", input=str(fifo), output_dir=str(out), **PATCH)
    good = proc.send("generate", input=str(color_texture_path), output_dir=str(out), **PATCH)
    final = _final(proc, bad)
    refused_s = time.monotonic() - started
    assert final["type"] == "error" and final["code"] == "bad_input", final
    assert "named pipe" in final["message"] and str(fifo) in final["message"]
    assert refused_s < 30, refused_s  # before: never (the worker blocked in open() for good)
    assert _final(proc, good)["type"] == "result"
    started = time.monotonic()
    assert proc.ask("shutdown")["type"] == "ack"
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 10  # before: 30.5 s (the stop timeout)


def test_devices_sockets_and_folders_are_refused_before_any_read(service, tmp_path):
    sock_path = tmp_path / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, kind in (("/dev/zero", "character device"), (str(sock_path), "socket"), (str(tmp_path), "folder")):
            final = _final(service, service.send("generate", input=path, output_dir=str(tmp_path / "o"), **PATCH))
            assert final["code"] == "bad_input" and kind in final["message"], final
    finally:
        sock.close()
    assert not (tmp_path / "o").exists()


# --- 2. the declared size is checked from the header ---------------------------------------------

@pytest.mark.parametrize("side", [24000, 16500])  # over Pillow's bomb limit; over MAX_SOURCE_SIDE only
def test_a_small_png_declaring_a_huge_size_is_refused_fast_with_little_memory(service, tmp_path, side):
    bomb = png_declaring(tmp_path / f"bomb{side}.png", side, side)
    assert bomb.stat().st_size < 2_000_000
    assert service.ask("hello")["type"] == "hello"
    rss_before = service.rss_mb()
    started = time.monotonic()
    final = _final(service, service.send("generate", input=str(bomb), output_dir=str(tmp_path / "o"), **PATCH))
    elapsed = time.monotonic() - started
    grown = service.rss_mb() - rss_before
    assert final["code"] == "bad_input" and "8192" in final["hint"], final
    # before: 3.1 s and +1.1 GB (the whole image decoded first)
    assert elapsed < 5 and grown < 100, (elapsed, grown)


# --- 3. SIGTERM / SIGINT mid-job --------------------------------------------------------------------

@pytest.mark.parametrize("signame", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])  # one by default
def test_a_stop_signal_mid_job_cancels_it_removes_its_files_and_exits_0(signame, tiny_models, tmp_path,
                                                                        color_texture_path):
    proc = ServiceProcess(tmp_path, "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]))
    out = tmp_path / "job"
    job = proc.send("generate", input=str(color_texture_path), output_dir=str(out), preview_every=1,
                    **TINY | {"steps": 100})
    progress = proc.until(lambda e: e["id"] == job and e["type"] == "progress" and "preview" in e)[-1]
    staging = Path(progress["preview"]).parent  # previews stay in the job's staging folder
    assert staging.parent == out and staging.name.startswith(".staging-") and Path(progress["preview"]).exists()
    proc.popen.send_signal(getattr(signal, signame))
    assert proc.wait(60) == 0, proc.stderr_tail()
    finals = [e for e in _drain(proc) if e["id"] == job and e["type"] in ("result", "error", "cancelled")]
    assert [(e["type"], e["stage"]) for e in finals] == [("cancelled", "running")], finals
    assert not out.exists()  # the folder the job made, its previews: all gone
    assert proc.bad_lines == []
    assert "interrupted" in (proc.log_dir / "service.log").read_text()


# --- 4. the error table ------------------------------------------------------------------------------

def _limit_file_size():  # runs in the child before exec: files over 64 KiB fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_file_too_large_for_the_process_is_bad_output_and_leaves_nothing(tmp_path, color_texture_path):
    proc = ServiceProcess(tmp_path, preexec_fn=_limit_file_size)
    out = tmp_path / "out"
    final = _final(proc, proc.send("generate", input=str(color_texture_path), output_dir=str(out),
                                   **PATCH | {"size": 512}))
    assert final["code"] == "bad_output" and final["hint"] == OUTPUT_HINT, final  # before: engine_failed
    assert "larger than" in final["message"]
    assert not out.exists()
    assert proc.stop() == 0


def test_output_paths_that_cannot_be_used_are_bad_output_and_nothing_is_created(service, tmp_path,
                                                                                color_texture_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [str(tmp_path / "no-such-parent" / "job"), str(a_file), str(tmp_path / "bad-\ud800-name")]
    for output_dir in cases:
        events = service.job_events(service.send("generate", input=str(color_texture_path), output_dir=output_dir,
                                                 **PATCH))
        assert [e["type"] for e in events] == ["accepted", "error"], events  # refused before any work
        assert events[-1]["code"] == "bad_output" and events[-1]["hint"], (output_dir, events[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_bad_pickle_with_allow_pickle_is_bad_model_not_models_missing(tiny_models, tmp_path, color_texture_path):
    base = tmp_path / "sd15"
    shutil.copytree(tiny_models["base"], base)
    (base / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (base / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle" * 20)
    proc = ServiceProcess(tmp_path, "--base", str(base), "--ip-adapter", str(tiny_models["ip_adapter"]),
                          "--allow-pickle")
    assert "allow_pickle" not in proc.ask("hello")["parameters"]["extra"]["diffusion"]
    final = _final(proc, proc.send("generate", input=str(color_texture_path), output_dir=str(tmp_path / "o"),
                                   **TINY))
    assert final["code"] == "bad_model", final  # before: models_missing, "run download-models"
    assert "diffusion_pytorch_model.bin" in final["message"] and "download-models" not in final["hint"].split(
        "(")[0]
    assert proc.stop() == 0


# --- 5. bounds: queue length, status summary, event lines ---------------------------------------------

def test_the_queue_is_bounded_status_summarises_it_and_everything_cancels(service, tmp_path, color_texture_path):
    out = str(tmp_path / "o")
    running = service.send("generate", input=str(color_texture_path), output_dir=out, **TINY | {"steps": 200})
    service.until(lambda e: e["id"] == running and e["type"] == "progress")
    queued = [service.send("generate", input=str(color_texture_path), output_dir=out, **PATCH)
              for _ in range(MAX_QUEUE)]
    accepted = service.until(lambda e: e["id"] == queued[-1] and e["type"] == "accepted")
    assert [e["position"] for e in accepted if e["type"] == "accepted"] == list(range(1, MAX_QUEUE + 1))
    busy = service.ask("generate", input=str(color_texture_path), output_dir=out, **PATCH)
    assert busy["type"] == "error" and busy["code"] == "busy" and "--max-queue" in busy["hint"], busy
    assert service.ask("unload")["code"] == "busy"
    status = service.ask("status")
    assert status["queued"] == MAX_QUEUE and [j["job"] for j in status["queue"]] == queued[:10]
    assert len(json.dumps(status)) < 10_000
    for job in [*queued, running]:
        service.send("cancel", job=job)
    events = service.until(lambda e: e["id"] == running and e["type"] in ("cancelled", "result", "error"))
    assert {e["id"] for e in events if e["type"] == "cancelled"} == {*queued, running}
    assert service.ask("status")["queued"] == 0


def test_an_event_that_would_pass_the_line_limit_is_shortened(service, tmp_path, color_texture_path):
    prompt = "brick " * 120_000  # 720 kB: fits in a request, twice in a result (two variants) it would not
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), prompt=prompt,
                       variants=2, **PATCH)
    final = _final(service, job)
    assert final["type"] == "result" and final["truncated"] is True
    assert all(Path(f["path"]).is_file() for f in final["files"])  # paths are short: kept whole
    assert service.longest_line <= MAX_EVENT_BYTES
    with Image.open(final["files"][0]["path"]) as im:  # the file keeps the whole record
        assert json.loads(im.text["parameters"])["prompt"] == prompt


# --- 7. allow_pickle is the starter's choice; relative-path hints; parent folders -----------------

def test_a_request_cannot_switch_on_allow_pickle(service, tmp_path, color_texture_path):
    for value in (True, False):
        answer = service.ask("generate", input=str(color_texture_path), output_dir=str(tmp_path),
                             extra={"allow_pickle": value}, **PATCH)
        assert answer["code"] == "bad_request" and "--allow-pickle" in answer["hint"], answer
    assert "allow_pickle" not in service.ask("hello")["parameters"]["extra"]["diffusion"]


def test_a_missing_input_creates_no_folder_and_its_hint_does_not_talk_about_relative_paths(service, tmp_path):
    out = tmp_path / "new" / "job"
    (tmp_path / "new").mkdir()
    final = _final(service, service.send("generate", input=str(tmp_path / "missing.png"), output_dir=str(out),
                                         **PATCH))
    assert final["code"] == "bad_input" and "relative" not in final["hint"]
    assert list((tmp_path / "new").iterdir()) == []


# --- 6. the job folder ------------------------------------------------------------------------------

def test_the_job_writes_into_output_dir_under_free_names_and_keeps_what_was_there(service, tmp_path,
                                                                                 color_texture_path):
    taken = tmp_path / "gravel_color-patch-s3.png"
    taken.write_bytes(b"the user's own file")
    final = _final(service, service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path),
                                         variants=2, tiled_preview=True, **PATCH))
    assert final["folder"] == str(tmp_path)
    names = sorted(Path(p).name for f in final["files"] for p in (f["path"], f["tiled"]))
    assert names == ["gravel_color-patch-s3-2-tiled3x3.png", "gravel_color-patch-s3-2.png",
                     "gravel_color-patch-s4-tiled3x3.png", "gravel_color-patch-s4.png"]
    assert taken.read_bytes() == b"the user's own file"
    marker = f".job-{final['id']}.done.json"  # the completion marker, moved in last
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([taken.name, marker, *names])


def test_a_cancelled_job_removes_exactly_what_it_wrote(service, tmp_path, color_texture_path):
    mine = tmp_path / "keep.png"
    mine.write_bytes(b"x")
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), preview_every=1,
                       **TINY | {"steps": 100})
    service.until(lambda e: e["id"] == job and e["type"] == "progress" and "preview" in e)
    service.send("cancel", job=job)
    assert _final(service, job)["type"] == "cancelled"
    assert list(tmp_path.iterdir()) == [mine]  # the folder existed: it stays, with only what was there
