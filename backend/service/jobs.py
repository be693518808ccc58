"""The service's job queue: one worker thread runs generate jobs one at a time, in arrival order.

The reader thread (backend.service.server) only queues, cancels and inspects jobs, so it keeps answering
while a job runs; each of those is O(1) (the queue is indexed by job id) and the queue has a maximum
length. The request's output_dir is the job folder (backend.service.job_folder): a job stages its
files and moves them in, under free names and with a completion marker, only when all are written; a
job that is cancelled or fails removes exactly what it wrote, and the folder if it made it.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import CancelledError, classify
from backend.params import GenerationParams
from backend.service.job_folder import JobOutput
from backend.service.protocol import ProtocolError, error_event, event

log = logging.getLogger(__name__)

Emit = Callable[[dict], None]

DEFAULT_MAX_QUEUE = 100  # requests waiting for the worker (generate jobs and unloads)
STATUS_QUEUE_SHOWN = 10  # `status` lists this many queued jobs and counts the rest


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
    maps_only: bool = False  # the input's own derived maps, no variant (backend.api.derive_maps)
    upscale: int = 0  # an upscale request: the input this many times larger (backend/upscaling.py)
    tileable: dict | None = None  # make_tileable's options: the input itself made tileable, no variant
    tileset: dict | None = None  # tileset's options: a Wang tile set of the input (backend/tileset/)
    tileset_layout: dict | None = None  # tileset_layout's: cells of the tile set whose JSON is the input
    room: Callable[[], None] | None = None  # raises when the job's files may not grow (a workspace budget)
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

    def __init__(self, emit: Emit, run_generation: Callable[..., list], max_queue: int = DEFAULT_MAX_QUEUE,
                 records: Path | None = None):
        """`records`: where jobs record their staging folders (backend.service.job_folder)."""
        self._emit = emit
        self.records = records
        self._generate = run_generation  # backend.api.generate, or a wrapper of it
        self.max_queue = max_queue
        self._lock = threading.Condition()
        # Keyed ("job", id) or ("task", n): O(1) lookup, removal and popping of the oldest.
        self._queue: collections.OrderedDict = collections.OrderedDict()
        self._queued_jobs = 0
        self._task_numbers = itertools.count()
        self._running: Job | None = None
        self._stopping = False
        self.jobs_done = 0
        self._thread = threading.Thread(target=self._work, name="texture-variants-worker", daemon=True)
        self._thread.start()

    # --- reader-thread side -------------------------------------------------------------------

    def submit(self, item: Job | _Task, announce: Callable[[int], None] | None = None) -> None:
        """Queue a job or task, or raise ProtocolError `busy` when the queue is full.

        `announce(ahead)` (how many jobs are ahead) is called before the worker can see the item, so
        an `accepted` event it emits comes before any event of the job.
        """
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise ProtocolError("busy", f"the queue is full: {len(self._queue)} requests are waiting, the "
                                    f"limit is {self.max_queue}", "wait for queued jobs to end or cancel some "
                                    "(the limit is set by `serve --max-queue`)", item.id)
            ahead = self._queued_jobs + (self._running is not None)
            if isinstance(item, Job):
                self._queue[("job", item.id)] = item
                self._queued_jobs += 1
            else:
                self._queue[("task", next(self._task_numbers))] = item
            if announce is not None:
                announce(ahead)
            self._lock.notify()

    def run_between_jobs(self, request_id, fn: Callable[[], dict]) -> None:
        self.submit(_Task(request_id, fn))

    def is_active(self, job_id) -> bool:
        with self._lock:
            return ("job", job_id) in self._queue or (self._running is not None and self._running.id == job_id)

    def uses(self, folder: Path) -> bool:
        """Whether a queued or running job reads or writes inside `folder` (paths compared resolved, so
        no `..` or link alias hides a job's folder)."""
        with self._lock:
            jobs = [item for item in self._queue.values() if isinstance(item, Job)] + [self._running]
        folder = Path(os.path.realpath(folder))
        return any(folder == path or folder in path.parents for job in jobs if job is not None
                   for path in (Path(os.path.realpath(p)) for p in (job.input, job.output_dir,
                                                                     *job.params.maps.values())))

    def cancel(self, job_id) -> str | None:
        """Cancel a queued or running job: 'queued', 'running', or None when no such job is active."""
        with self._lock:
            item = self._queue.pop(("job", job_id), None)
            if item is None:
                job = self._running
                if job is None or job.id != job_id:
                    return None
                if not job.cancel.is_set():
                    job.cancel_step = job.step
                    job.cancel.set()
                return "running"
            self._queued_jobs -= 1
        item.state = "done"
        self._emit(event("cancelled", job_id, job=job_id, stage="queued"))
        return "queued"

    def snapshot(self) -> dict:
        """The running job, the first STATUS_QUEUE_SHOWN queued jobs and how many are queued in all."""
        with self._lock:
            jobs = (item for item in self._queue.values() if isinstance(item, Job))
            return {
                "running": self._running.summary() if self._running else None,
                "queue": [job.summary() for job in itertools.islice(jobs, STATUS_QUEUE_SHOWN)],
                "queued": self._queued_jobs,
                "jobs_done": self.jobs_done,
            }

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel everything queued and running, let the worker finish, return whether it did."""
        with self._lock:
            self._stopping = True
            queued = list(self._queue.values())
            self._queue.clear()
            self._queued_jobs = 0
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
                _, item = self._queue.popitem(last=False)
                if isinstance(item, Job):
                    self._queued_jobs -= 1
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
        return run_job(job, self._generate, lambda output, step, total, preview: self._on_step(
            job, output, step, total, preview), records=self.records)

    def _on_step(self, job: Job, output: JobOutput, step: int, total: int, preview) -> None:
        job.step, job.total = step, total
        elapsed = time.monotonic() - job.started
        eta = output.eta(step, total)
        fields = {"job": job.id, "step": step, "total": total, "elapsed": round(elapsed, 3),
                  "eta": None if eta is None else round(eta, 3)}
        path = output.write_preview(preview, step, total)
        if path is not None:
            fields["preview"] = str(path)
            fields["preview_decoder"] = preview.info.get("decoder", "latent")
        self._emit(event("progress", job.id, **fields))


def run_job(job: Job, generate: Callable[..., list], on_step: Callable | None = None,
            records: Path | None = None) -> dict:
    """Run one job into its folder; return its final event (result, error or cancelled).

    `generate` is backend.api.generate or a wrapper of it; `on_step(output, step, total, preview)`;
    `records`: where the job records its staging folder (backend.service.job_folder)."""
    job.started = job.started or time.monotonic()
    log.info("job %r: start (%s)", job.id, job.input)
    output = JobOutput(job, records, job.room)
    try:
        output.check()
        images = generate(
            job.input, job.params, base=job.base, ip_adapter=job.ip_adapter, cancel=job.cancel,
            on_step=None if on_step is None else lambda step, total, preview: on_step(output, step, total, preview),
            **({"maps_only": True} if job.maps_only else {}), **({"upscale": job.upscale} if job.upscale else {}),
            **({"tileable": job.tileable} if job.tileable is not None else {}),
            **({"tileset": job.tileset} if job.tileset is not None else {}),
            **({"tileset_layout": job.tileset_layout} if job.tileset_layout is not None else {}),
        )
        if job.cancel.is_set():  # cancelled after the last step: still nothing is kept
            raise CancelledError()
        files = output.write_results(images)
    except CancelledError:
        output.discard()
        log.info("job %r: cancelled at step %d", job.id, job.step)
        return event("cancelled", job.id, job=job.id, stage="running", cancel_step=job.cancel_step,
                     stopped_step=job.step)
    except Exception as e:  # bad input, a full disk, an engine bug: report the cause, keep serving
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file: name the folder
            e.filename = str(output.folder)
        error = classify(e, engine=_engine_used(job))  # before the clean-up: a full disk's space as it was
        output.discard()
        if error is e:
            log.info("job %r: %s", job.id, e)
        else:
            log.exception("job %r failed (%s)", job.id, error.code)
        return error_event(job.id, error.code, error.message, error.hint, job=job.id)
    elapsed = time.monotonic() - job.started
    log.info("job %r: done in %.2f s, %d file(s)", job.id, elapsed, len(files))
    return event("result", job.id, job=job.id, folder=str(output.folder), files=files,
                 elapsed=round(elapsed, 3))


def _engine_used(job: Job) -> str | None:
    """The engine the job ran on, for the hint of a failure (None when it cannot be told)."""
    engine = job.params.engine
    if engine != "auto":
        return engine
    try:
        from backend.diffusion import models  # file checks only: no torch import for a hint

        return "diffusion" if models.available(job.base, job.ip_adapter)[0] else "patch"
    except Exception:
        return None
