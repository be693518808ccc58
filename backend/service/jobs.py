"""The service's job queue: one worker thread runs generate jobs one at a time, in arrival order.

The reader thread (backend.service.server) only queues, cancels and inspects jobs, so it keeps answering
while a job runs. Everything a job writes goes into its own new folder inside the request's
output_dir, each file written atomically; a job that is cancelled or fails removes what it wrote.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import CancelledError, TextureVariantsError
from backend.params import GenerationParams
from backend.service.protocol import error_event, event

log = logging.getLogger(__name__)

Emit = Callable[[dict], None]


@dataclass
class Job:
    id: str | int
    input: str
    output_dir: str
    params: GenerationParams  # validated by the protocol, passed whole to backend.api.generate
    base: str | None = None
    ip_adapter: str | None = None
    tiled_preview: bool = False
    preview_every: int = 5
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued -> running -> done
    step: int = 0
    total: int = 0
    started: float | None = None
    cancel_step: int | None = None  # the step the job had reached when the cancel request arrived

    def summary(self) -> dict:
        d = {"job": self.id, "state": self.state, "input": self.input}
        if self.state == "running":
            d |= {"step": self.step, "total": self.total,
                  "elapsed": round(time.monotonic() - self.started, 3) if self.started else 0.0}
        return d


class _Task:
    """Work other than a job that must run on the worker thread, between jobs (e.g. unload)."""

    def __init__(self, request_id, fn: Callable[[], dict]):
        self.id, self.fn = request_id, fn


class JobRunner:
    """Owns the queue and the worker thread. All methods are safe to call from the reader thread."""

    def __init__(self, emit: Emit, run_generation: Callable[..., list]):
        self._emit = emit
        self._generate = run_generation  # backend.api.generate, or a wrapper of it
        self._lock = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._running: Job | None = None
        self._stopping = False
        self.jobs_done = 0
        self._thread = threading.Thread(target=self._work, name="texture-variants-worker", daemon=True)
        self._thread.start()

    # --- reader-thread side -------------------------------------------------------------------

    def submit(self, item: Job | _Task) -> int:
        """Queue a job or task; returns how many jobs are ahead of it."""
        with self._lock:
            ahead = len(self._queue) + (self._running is not None)
            self._queue.append(item)
            self._lock.notify()
            return ahead

    def run_between_jobs(self, request_id, fn: Callable[[], dict]) -> None:
        self.submit(_Task(request_id, fn))

    def is_active(self, job_id) -> bool:
        with self._lock:
            return (self._running is not None and self._running.id == job_id) or any(
                isinstance(j, Job) and j.id == job_id for j in self._queue)

    def cancel(self, job_id) -> str | None:
        """Cancel a queued or running job: 'queued', 'running', or None when no such job is active."""
        with self._lock:
            for item in self._queue:
                if isinstance(item, Job) and item.id == job_id:
                    self._queue.remove(item)
                    break
            else:
                job = self._running
                if job is None or job.id != job_id:
                    return None
                if not job.cancel.is_set():
                    job.cancel_step = job.step
                    job.cancel.set()
                return "running"
        item.state = "done"
        self._emit(event("cancelled", job_id, job=job_id, stage="queued"))
        return "queued"

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "running": self._running.summary() if self._running else None,
                "queue": [item.summary() for item in self._queue if isinstance(item, Job)],
                "jobs_done": self.jobs_done,
            }

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel everything queued and running, let the worker finish, return whether it did."""
        with self._lock:
            self._stopping = True
            queued, self._queue = list(self._queue), collections.deque()
            running = self._running
            if running is not None and not running.cancel.is_set():
                running.cancel_step = running.step
                running.cancel.set()
            self._lock.notify()
        for item in queued:
            if isinstance(item, Job):
                self._emit(event("cancelled", item.id, job=item.id, stage="queued"))
            else:
                self._emit(error_event(item.id, "shutting_down", "the service stopped before doing this",
                                       "start a new service"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- worker-thread side -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                if isinstance(item, Job):
                    item.state, item.started = "running", time.monotonic()
                    self._running = item
            if not isinstance(item, Job):
                self._run_task(item)
                continue
            try:
                final = self._run_job(item)
            except Exception as e:  # never let the worker die: the service must keep serving
                log.exception("worker: unexpected failure")
                final = error_event(item.id, "internal", f"{type(e).__name__}: {e}",
                                    "see the backend log for the traceback", job=item.id)
            with self._lock:  # the books are done before the final event, so a status after it agrees
                item.state = "done"
                self._running = None
                self.jobs_done += 1
            self._emit(final)

    def _run_task(self, task: _Task) -> None:
        try:
            self._emit(task.fn())
        except Exception as e:
            log.exception("task of request %r failed", task.id)
            self._emit(error_event(task.id, "internal", f"{type(e).__name__}: {e}",
                                   "see the backend log for the traceback"))

    def _run_job(self, job: Job) -> dict:
        """Run one job; return its final event (result, error or cancelled)."""
        log.info("job %r: start (%s)", job.id, job.input)
        output = JobOutput(job)
        try:
            output.create_folder()
            images = self._generate(
                job.input, job.params, base=job.base, ip_adapter=job.ip_adapter,
                on_step=lambda step, total, preview: self._on_step(job, output, step, total, preview),
                cancel=job.cancel,
            )
            if job.cancel.is_set():  # cancelled after the last step: still nothing is kept
                raise CancelledError()
            files = output.write_results(images)
        except CancelledError:
            output.discard()
            log.info("job %r: cancelled at step %d", job.id, job.step)
            return event("cancelled", job.id, job=job.id, stage="running", cancel_step=job.cancel_step,
                         stopped_step=job.step)
        except TextureVariantsError as e:
            output.discard()
            log.info("job %r: %s", job.id, e)
            return error_event(job.id, e.code, e.message, e.hint, job=job.id)
        except Exception as e:  # an engine bug or a library failure: report the cause, keep serving
            output.discard()
            log.exception("job %r failed", job.id)
            return error_event(job.id, "engine_failed", f"generation failed: {type(e).__name__}: {e}",
                               "see the backend log for the traceback; try the patch engine or smaller "
                               "settings", job=job.id)
        elapsed = time.monotonic() - job.started
        log.info("job %r: done in %.2f s, %d file(s)", job.id, elapsed, len(files))
        return event("result", job.id, job=job.id, folder=str(output.folder), files=files,
                     elapsed=round(elapsed, 3))

    def _on_step(self, job: Job, output: JobOutput, step: int, total: int, preview) -> None:
        job.step, job.total = step, total
        elapsed = time.monotonic() - job.started
        eta = output.eta(step, total)
        fields = {"job": job.id, "step": step, "total": total, "elapsed": round(elapsed, 3),
                  "eta": None if eta is None else round(eta, 3)}
        path = output.write_preview(preview, step, total)
        if path is not None:
            fields["preview"] = str(path)
        self._emit(event("progress", job.id, **fields))


def _safe_name(text: str, limit: int = 60) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "texture"
    return name[:limit]


class JobOutput:
    """The job's own folder: previews while it runs, the variants at the end, nothing if it fails."""

    def __init__(self, job: Job):
        self.job = job
        self.folder: Path | None = None
        self._written: list[Path] = []
        self._preview: Path | None = None
        self._last_preview_step = 0
        self._first_step_at: float | None = None
        self._first_step = 0

    def create_folder(self) -> None:
        from backend.errors import InputError

        parent = Path(self.job.output_dir)
        stem = f"{_safe_name(Path(self.job.input).stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                candidate = parent / (stem if n == 1 else f"{stem}-{n}")
                try:
                    candidate.mkdir()  # exclusive: an existing folder is never reused
                except FileExistsError:
                    continue
                self.folder = candidate
                return
        except OSError as e:
            raise InputError(f"cannot create the job folder in {parent}: {e.strerror or e}",
                             hint="choose an output folder you can write to", code="bad_output") from e
        raise InputError(f"too many job folders named {stem} in {parent}", hint="choose another output folder",
                         code="bad_output")

    def eta(self, step: int, total: int) -> float | None:
        """Seconds left, from the mean duration of the steps since the first one; None at the first step
        (its time is mostly model loading: counting it gave estimates many times too long)."""
        now = time.monotonic()
        if self._first_step_at is None:
            self._first_step_at, self._first_step = now, step
            return 0.0 if step >= total else None
        done = step - self._first_step
        if done <= 0:
            return None
        return max(0.0, (now - self._first_step_at) / done * (total - step))

    def write_preview(self, preview, step: int, total: int) -> Path | None:
        every = self.job.preview_every
        if preview is None or not every or self.folder is None:
            return None
        if step - self._last_preview_step < every and step != total:
            return None
        from backend.images import save_png_atomic

        path = save_png_atomic(preview, self.folder / "previews" / f"step-{step:04d}.png", overwrite=True)
        self._written.append(path)
        if self._preview is not None and self._preview != path:
            self._preview.unlink(missing_ok=True)  # keep only the newest preview on disk
        self._preview, self._last_preview_step = path, step
        return path

    def write_results(self, images) -> list[dict]:
        from backend.images import save_png_atomic, tiled, unique_path

        stem = _safe_name(Path(self.job.input).stem)
        files = []
        for image in images:
            params = json.loads(image.info.get("parameters", "{}"))
            name = f"{stem}-{params.get('engine', 'variant')}-s{params.get('seed', len(files))}"
            path = save_png_atomic(image, unique_path(self.folder, name))
            self._written.append(path)
            entry = {"path": str(path), "parameters": params}
            if self.job.tiled_preview:
                tiled_path = save_png_atomic(tiled(image, 3), unique_path(self.folder, f"{path.stem}-tiled3x3"))
                self._written.append(tiled_path)
                entry["tiled"] = str(tiled_path)
            files.append(entry)
        self._remove_previews()
        return files

    def _remove_previews(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder / "previews", ignore_errors=True)

    def discard(self) -> None:
        """Remove every file this job wrote, then its folder if nothing else is in it."""
        for path in self._written:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove %s", path)
        if self.folder is not None:
            for folder in (self.folder / "previews", self.folder):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
