"""Section 2: the service overhead, one job through `python -m backend serve` against the same call in-process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.service.protocol import PROTOCOL_VERSION
from scripts.benchmarks.common import ROOT, TEXTURE, Setup, interleaved, median, texture


class ServiceRun:
    """`python -m backend serve` over its pipes; events are stamped with perf_counter on arrival."""

    def __init__(self, models: dict, folder: Path, device: str | None = None):
        env = dict(os.environ, TEXTURE_VARIANTS_LOG_DIR=str(folder / "logs"), PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "backend", "serve", "--base", str(models["base"]),
                "--ip-adapter", str(models["ip_adapter"])]
        if device:
            args += ["--device", device]
        self._stderr = open(folder / "service-stderr.txt", "wb")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        self._n = 0

    def send(self, type: str, **fields) -> tuple[str, float]:
        self._n += 1
        request_id = f"bench-{self._n}"
        sent = time.perf_counter()
        self.popen.stdin.write((json.dumps({"id": request_id, "type": type, **fields}) + "\n").encode())
        self.popen.stdin.flush()
        return request_id, sent

    def until(self, request_id: str, final: tuple[str, ...]) -> list[tuple[float, dict]]:
        """(arrival time, event) of `request_id` up to and including the first of type in `final`."""
        seen = []
        for line in self.popen.stdout:
            now = time.perf_counter()
            event = json.loads(line)
            if event.get("id") != request_id:
                continue
            seen.append((now, event))
            if event["type"] in final:
                return seen
        raise RuntimeError(f"the service ended before answering {request_id}; see {self._stderr.name}")

    def job(self, **fields) -> dict:
        request_id, sent = self.send("generate", **fields)
        events = self.until(request_id, ("result", "error", "cancelled"))
        last_t, last = events[-1]
        if last["type"] != "result":
            raise RuntimeError(f"service job failed: {last}")
        progress = [t for t, e in events if e["type"] == "progress"]
        return {"first_progress_s": progress[0] - sent if progress else None, "total_s": last_t - sent,
                "job_elapsed_s": last.get("elapsed")}

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            request_id, _ = self.send("shutdown")
            self.until(request_id, ("ack",))
        with contextlib.suppress(OSError, ValueError):
            self.popen.stdin.close()
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._stderr.close()


def bench_service(models: dict, setup: Setup, *, device: str | None = None, log=print) -> dict:
    """Section 3: one variant (kv, texture cached) through the service vs the same call in-process.

    Both sides are warm (models loaded, reference work cached) before the interleaved repetitions,
    so the difference is what the service adds: JSON lines, the worker thread, the job folder, the
    variant PNG written into it and the live previews.
    """
    from backend import generate_variants

    params = dict(engine="diffusion", variants=1, seed=setup.seed, steps=setup.steps, size=setup.size)
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp:
        tmp = Path(tmp)
        reference_path = tmp / f"{TEXTURE}.png"
        texture(TEXTURE, setup.size).save(reference_path)
        service = ServiceRun(models, tmp, device)
        try:
            hello_id, _ = service.send("hello", protocol=PROTOCOL_VERSION, client="bench")
            service.until(hello_id, ("hello", "error"))
            job = dict(input=str(reference_path), output_dir=str(tmp / "out"), **params)
            t0 = time.perf_counter()
            service.job(**job)  # loads the models in the service and caches the reference work
            service_load_s = time.perf_counter() - t0

            def in_process() -> dict:
                first = []
                start = time.perf_counter()
                generate_variants(reference_path, base=str(models["base"]), ip_adapter=str(models["ip_adapter"]),
                                  on_step=lambda *a: first or first.append(time.perf_counter()),
                                  **({"device": device} if device else {}), **params)
                return {"first_progress_s": first[0] - start, "total_s": time.perf_counter() - start}

            in_process()  # warm in this process too
            results: dict[str, list[dict]] = {"service": [], "in_process": []}
            cases = {"service": lambda: results["service"].append(service.job(**job)),
                     "in_process": lambda: results["in_process"].append(in_process())}

            def progress(name, rep, seconds):
                log(f"[bench] service overhead, {name:<10} rep {rep + 1}/{setup.service_reps}: {seconds:7.2f} s")

            interleaved(cases, setup.service_reps, progress)
        finally:
            service.close()

    def med(side, key):
        return round(median(r[key] for r in results[side]), 3)

    out = {"size": setup.size, "steps": setup.steps, "variants": 1, "reps": setup.service_reps,
           "service_first_job_incl_load_s": round(service_load_s, 2), "raw": results}
    for key in ("first_progress_s", "total_s"):
        out[key] = {"service": med("service", key), "in_process": med("in_process", key)}
        out[key]["overhead"] = round(out[key]["service"] / out[key]["in_process"] - 1, 4)
    out["job_elapsed_s"] = med("service", "job_elapsed_s")
    return out
