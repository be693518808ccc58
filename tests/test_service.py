"""`python -m backend serve` as a real subprocess: jobs on the real engines, cancel, status, shutdown.

The diffusion jobs run on the tiny random-weight test models (64 px, a few steps); jobs that only
need to be some job use the weight-free patch engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from backend import __version__
from backend.service.protocol import PROTOCOL_VERSION
from tests.conftest import ROOT
from tests.service_process import ServiceProcess, tiny_model_service

TINY = dict(engine="diffusion", size=64, steps=2, seed=11)


@pytest.fixture(scope="module")
def service(tiny_models, tmp_path_factory):
    yield from tiny_model_service(tmp_path_factory.mktemp("service"), tiny_models)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_hello_reports_protocol_engines_models_and_device(service):
    hello = service.ask("hello", protocol=PROTOCOL_VERSION, client="pytest")
    assert hello["type"] == "hello"
    assert hello["protocol"] == PROTOCOL_VERSION and hello["version"] == __version__
    assert hello["engines"]["diffusion"] == {"available": True, "why": "models found locally"}
    assert hello["engines"]["patch"]["available"] is True
    assert hello["models"]["configured_present"] is True
    assert set(hello["models"]["defaults_present"]) >= {"base", "ip_adapter"}
    assert hello["pid"] == service.popen.pid
    status = service.ask("status")  # the device probe ends; status then names the device
    assert status["device"] in (None, "cpu", "cuda", "mps")


def test_hello_asks_the_same_model_lookup_as_the_diffusion_engine(tiny_models, tmp_path):
    from backend.diffusion import engine as diffusion
    from backend.service.warmup import availability as _availability

    for base, ip_adapter in ((tiny_models["base"], tiny_models["ip_adapter"]), (tmp_path / "none", None),
                             (tiny_models["base"], tmp_path)):
        assert _availability("diffusion", str(base), ip_adapter and str(ip_adapter)) == diffusion.available(
            str(base), ip_adapter and str(ip_adapter))


def test_full_job_progress_then_valid_pngs(service, color_texture_path, tmp_path):
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), variants=2,
                       tiled_preview=True, preview_every=1, **TINY)
    events = service.job_events(job)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result", events
    progress = [e for e in events if e["type"] == "progress"]
    steps = [e["step"] for e in progress]
    assert steps == list(range(1, progress[-1]["total"] + 1))  # every step, in order, to the end
    assert all(e["elapsed"] >= 0 and (e["eta"] is None or e["eta"] >= 0) for e in progress)
    assert progress[-1]["eta"] == 0
    previews = [e["preview"] for e in progress if "preview" in e]
    assert previews, "the diffusion engine provides previews; the service must pass them on"
    # no TAESD in the tiny set's HF cache: the latent colour map, and the event says so
    assert {e["preview_decoder"] for e in progress if "preview" in e} == {"latent"}
    result = events[-1]
    folder = Path(result["folder"])
    assert folder == tmp_path  # output_dir is the job folder
    assert all(Path(p).parent.parent == folder and Path(p).parent.name.startswith(".staging-")
               and Path(p).name.startswith("gravel_color-preview-") for p in previews)  # in the staging folder
    assert len(result["files"]) == 2
    for i, entry in enumerate(result["files"]):
        path, tiled = Path(entry["path"]), Path(entry["tiled"])
        assert path.parent == folder and tiled.parent == folder
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (64, 64)
            assert json.loads(im.text["parameters"]) == entry["parameters"]
        with Image.open(tiled) as im:
            assert im.size == (192, 192)
        assert entry["parameters"]["seed"] == TINY["seed"] + i
        assert entry["parameters"]["engine"] == "diffusion"
    # Only the variants and their tiled images remain: no temporary names, no previews.
    marker = tmp_path / f".job-{job}.done.json"  # moved in last; no staging folder, no preview left
    assert _files_under(tmp_path) == sorted([marker, *(Path(p) for e in result["files"] for p in (e["path"], e["tiled"]))])


def test_second_job_reuses_the_loaded_models(service, color_texture_path, tmp_path):
    first = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **TINY)
    assert service.job_events(first)[-1]["type"] == "result"
    before = service.ask("status")
    assert before["model_loads"] >= 1
    assert len(before["loaded_models"]) == 1
    second = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path),
                          **TINY | {"seed": 12})
    assert service.job_events(second)[-1]["type"] == "result"
    after = service.ask("status")
    assert after["model_loads"] == before["model_loads"]
    assert after["loaded_models"] == before["loaded_models"]
    assert after["jobs_done"] == before["jobs_done"] + 1


def test_status_and_cancel_while_a_job_runs(service, color_texture_path, tmp_path):
    long = TINY | {"steps": 30, "seed": 21}
    running = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **long)
    queued = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **long)
    service.until(lambda e: e["id"] == running and e["type"] == "progress")

    status = service.ask("status")  # answered while the job runs
    assert status["running"]["job"] == running and status["running"]["state"] == "running"
    assert [j["job"] for j in status["queue"]] == [queued]
    assert service.ask("hello")["type"] == "hello"

    cancel_queued = service.send("cancel", job=queued)
    events = service.until(lambda e: e["id"] == cancel_queued)
    assert {"type": "cancelled", "id": queued, "job": queued, "stage": "queued"} in events
    assert events[-1] == {"type": "ack", "id": cancel_queued, "request": "cancel", "job": queued, "stage": "queued"}

    cancel_running = service.send("cancel", job=running)
    events = service.until(lambda e: e["id"] == running and e["type"] in ("result", "error", "cancelled"))
    final = events[-1]
    assert final["type"] == "cancelled" and final["stage"] == "running"
    # Stopped within one step of the moment the cancel arrived.
    assert final["stopped_step"] - final["cancel_step"] <= 1
    ack = next((e for e in events if e["id"] == cancel_running), None) or service.next_event()
    assert ack == {"type": "ack", "id": cancel_running, "request": "cancel", "job": running, "stage": "running"}
    # Nothing of either job is left: no folder, no preview, no half-written file.
    assert list(tmp_path.iterdir()) == []
    assert service.ask("status")["queue"] == []


def test_unload_frees_models_and_the_next_job_loads_again(service, color_texture_path, tmp_path):
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **TINY)
    assert service.job_events(job)[-1]["type"] == "result"
    loads = service.ask("status")["model_loads"]
    ack = service.ask("unload")
    assert ack["type"] == "ack" and ack["request"] == "unload" and len(ack["freed"]) == 1
    assert service.ask("status")["loaded_models"] == []
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **TINY)
    assert service.job_events(job)[-1]["type"] == "result"
    assert service.ask("status")["model_loads"] == loads + 1


def test_bad_input_files_are_errors_and_the_service_keeps_serving(service, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (128, 128), "red").save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    unreadable = tmp_path / "locked.png"
    unreadable.write_bytes((tmp_path / "whole.png").read_bytes())
    unreadable.chmod(0)
    cases = [tmp_path / "missing.png", folder, text, truncated]
    if os.geteuid() != 0:  # root reads any file
        cases.append(unreadable)
    out = tmp_path / "out"
    for path in cases:
        job = service.send("generate", input=str(path), output_dir=str(out), engine="patch", size=64)
        final = service.job_events(job)[-1]
        assert final["type"] == "error" and final["code"] == "bad_input", final
        assert str(path) in final["message"] and final["hint"]
        assert "relative" not in final["hint"]  # the service refuses relative paths anyway
    assert not out.exists()  # nothing is created before the input is read
    assert service.ask("hello")["type"] == "hello"


def test_an_exception_inside_the_engine_is_reported_and_serving_goes_on(service, tiny_models, tmp_path,
                                                                          color_texture_path):
    # A model folder whose UNet weights are cut short: the loader inside the engine fails.
    import shutil

    broken = tmp_path / "broken-sd15"
    shutil.copytree(tiny_models["base"], broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path / "out"),
                       base=str(broken), **TINY)
    final = service.job_events(job)[-1]
    assert final["type"] == "error" and final["code"] == "bad_model", final  # present but unreadable
    assert final["message"] and final["hint"]
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path / "out"), **TINY)
    assert service.job_events(job)[-1]["type"] == "result"


def test_request_errors_name_the_problem(service, tmp_path, color_texture_path):
    unknown = service.ask("cancel", job="no-such-job")
    assert unknown["type"] == "error" and unknown["code"] == "unknown_job"
    bad = service.ask("generate", input=str(color_texture_path), output_dir=str(tmp_path), size=9000)
    assert bad["code"] == "bad_request" and "size" in bad["message"]
    # A second generate with the id of a queued or running job is refused. Both lines go in one write:
    # the service reads the second long before the first job can end.
    line = json.dumps({"id": "dup", "type": "generate", "input": str(color_texture_path),
                       "output_dir": str(tmp_path), **TINY}).encode() + b"\n"
    service.send_line(line + line)
    events = [e for e in service.until(lambda e: e["id"] == "dup" and e["type"] in ("result", "cancelled") or (
        e["type"] == "error" and e.get("code") != "duplicate_id")) if e["id"] == "dup"]
    assert [e["type"] for e in events][:2] == ["accepted", "error"]
    assert events[1]["code"] == "duplicate_id"
    assert events[-1]["type"] == "result"


def test_sketch_fields_are_listed_checked_and_used(service, tiny_models, color_texture_path, tmp_path):
    from PIL import ImageDraw

    parameters = service.ask("hello", protocol=PROTOCOL_VERSION, client="pytest")["parameters"]
    assert {"sketch", "sketch_mode", "sketch_strength"} <= set(parameters["fields"])
    assert parameters["choices"]["sketch_mode"] == ["lgp", "controlnet"]
    assert {"sketch_window", "lgp", "controlnet"} <= set(parameters["extra"]["diffusion"])
    sketch = tmp_path / "sketch.png"
    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).line((0, 32, 64, 32), fill=0, width=4)
    image.save(sketch)
    relative = service.ask("generate", input=str(color_texture_path), output_dir=str(tmp_path), sketch="sketch.png",
                           **TINY)
    assert relative["code"] == "bad_request" and "'sketch' must be an absolute path" in relative["message"]
    job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), sketch=str(sketch),
                       sketch_mode="lgp", sketch_strength=1.5, extra={"lgp": str(tiny_models["lgp"])}, **TINY)
    events = service.job_events(job)
    assert events[-1]["type"] == "result", events[-1]
    record = events[-1]["files"][0]["parameters"]
    assert record["sketch"] == str(sketch) and record["sketch_strength"] == 1.5 and record["sketch_window_steps"] == [0]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through Linux /proc")
def test_no_network_socket_is_open_after_jobs_on_both_engines(service, color_texture_path, tmp_path):
    for engine in ("diffusion", "patch"):
        job = service.send("generate", input=str(color_texture_path), output_dir=str(tmp_path), **TINY | {
            "engine": engine})
        assert service.job_events(job)[-1]["type"] == "result"
    fd_dir = Path(f"/proc/{service.popen.pid}/fd")
    targets = [os.readlink(fd_dir / name) for name in os.listdir(fd_dir)]
    assert targets and not [t for t in targets if t.startswith("socket:")], targets


def test_stdin_closed_mid_job_ends_the_job_and_exits_0(tmp_path, color_texture_path):
    proc = ServiceProcess(tmp_path)
    out = tmp_path / "out"
    job = proc.send("generate", input=str(color_texture_path), output_dir=str(out), engine="patch", size=256)
    proc.until(lambda e: e["id"] == job and e["type"] == "accepted")
    proc.close_stdin()
    assert proc.wait() == 0, proc.stderr_tail()
    events = []
    while (event := proc.next_event(10)) is not None:
        events.append(event)
    finals = [e for e in events if e["id"] == job and e["type"] in ("result", "cancelled", "error")]
    assert [e["type"] for e in finals] in (["cancelled"], ["result"]), events  # finished or cancelled
    if finals[0]["type"] == "cancelled":
        assert not out.exists() or _files_under(out) == []
    assert proc.bad_lines == []


def test_shutdown_acks_and_exits_0_and_logs_to_the_log_folder(tmp_path):
    proc = ServiceProcess(tmp_path)
    assert proc.ask("hello")["type"] == "hello"
    assert proc.ask("shutdown") == {"type": "ack", "id": "t2", "request": "shutdown"}
    assert proc.wait() == 0
    log = (proc.log_dir / "service.log").read_text()
    assert "serving protocol" in log and "bye" in log


def test_stdout_carries_protocol_lines_only_even_when_libraries_print(tmp_path):
    """After isolate_stdio, Python prints, C-level writes to fd 1 and child processes go to stderr."""
    script = textwrap.dedent("""
        import os, sys
        from backend.service.server import isolate_stdio
        protocol_in, protocol_out = isolate_stdio()
        print("a library printing")
        sys.stdout.flush()
        os.write(1, b"a C extension writing to fd 1\\n")
        os.system("echo a child process")
        protocol_out.write(protocol_in.readline())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, input=b'{"line": 1}\n',
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"line": 1}\n'
    for noise in (b"a library printing", b"a C extension writing", b"a child process"):
        assert noise in done.stderr


def test_without_the_diffusion_models_torch_stays_out_of_the_service_and_jobs_never_wait_for_it(tmp_path):
    """The device is found in a child process: the service itself never imports torch for it, so a
    first patch job cannot meet a half-imported torch (and does not wait for one)."""
    import subprocess
    import sys

    code = ("import sys; from backend.service.warmup import Warmup; w = Warmup(None, None, None); "
            "w.wait(); print(w.torch_settled.is_set(), w.device, w.torch_version is not None, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTURE_VARIANTS_")} | {"HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "cpu", "True", "False"]
