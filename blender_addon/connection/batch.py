"""Several generate jobs followed as one: Generate for Selected's jobs, one per material. Plain Python
(no bpy), unit-tested against the real backend service.

The jobs go to the backend over the service protocol, through the session's client, like Generate's
one job, rather than through `python -m backend batch`: the protocol is what every configured backend
speaks (the local interpreter or a remote command over ssh), it carries the files to and from a
backend that does not share this machine's files (the batch command needs the manifest, the inputs
and the outputs on its own file system), each job can be cancelled on its own (queued ones at once),
the backend's queue runs them one after another with the models loaded once, and every job ends in
its own result or error. The manifest written beside the jobs is a `python -m backend batch`
manifest: that command, with --ray, is the route for render farms and clusters (docs/guide/batch-and-remote.md, "Batch").
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .job import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobTracker
from .session import wait_or_cancel

MANIFEST = "manifest.jsonl"


def confirm_message(count: int, last_job_seconds: float | None) -> str:
    """What All Materials asks before it starts a job for every material: how many, and about how long
    (at the pace of the last finished job of this session, when there is one: the jobs run one after
    another)."""
    jobs = f"{count} material{'s' if count != 1 else ''}"
    if not last_job_seconds:
        return f"Make variants for all {jobs} of the file? It takes about as long as {count} Generates one " \
               "after another; Cancel stops them all."
    total = count * last_job_seconds
    pace = f"about {total / 60:.0f} min" if total >= 90 else f"about {max(1, round(total))} s"
    return (f"Make variants for all {jobs} of the file? {pace} at the last Generate's pace "
            f"({last_job_seconds:.1f} s a material); Cancel stops them all.")

# The last batch's outcome, one (material name, got variants, what happened) per material, for the panel
# and for scripts (the per-material truth is each material's history).
last_batch: list[tuple[str, bool, str]] = []


def _relative(path: str, folder: Path) -> str:
    """`path` relative to `folder` when it is inside it (the manifest travels with its folder), else as is."""
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return path


def write_manifest(folder: Path, jobs: list[dict]) -> Path:
    """`folder/manifest.jsonl`, a new file: one job a line (a generate request's fields), `input`,
    `maps` and `output_dir` relative to `folder`, so `python -m backend batch manifest.jsonl --out DIR`
    makes the same jobs again (same seeds, same pixels) into DIR."""
    lines = []
    for job in jobs:
        line = dict(job, input=_relative(job["input"], folder), output_dir=_relative(job["output_dir"], folder))
        if job.get("maps"):
            line["maps"] = {name: _relative(path, folder) for name, path in job["maps"].items()}
        lines.append(json.dumps(line, sort_keys=True) + "\n")
    path = folder / MANIFEST
    temp = folder / f".{MANIFEST}.tmp"
    with open(temp, "x", encoding="utf-8") as f:
        f.writelines(lines)
    try:
        os.link(temp, path)  # never replaces a file
    finally:
        temp.unlink()
    return path


@dataclass
class BatchJob:
    """The jobs of one batch, in order, each a JobTracker; to the panel it looks like one job."""

    trackers: list[JobTracker]
    client: object = None
    sent: bool = False  # every job was sent (or failed to be)
    cancel_requested: bool = False
    preview: str | None = None  # a batch shows no live preview
    preview_serial: int = 0
    _cancel_sent: bool = False
    created: float = field(default_factory=time.monotonic)  # the click: a time-out counts from here

    @property
    def id(self) -> str:
        """Empty until every job is sent: the session leaves their events queued until then."""
        return "batch" if self.sent else ""

    @property
    def finished(self) -> bool:
        return self.sent and all(t.finished for t in self.trackers)

    @property
    def state(self) -> str:
        if not self.finished:
            return RUNNING if any(t.state != QUEUED for t in self.trackers) else QUEUED
        states = {t.state for t in self.trackers}
        return DONE if states == {DONE} else CANCELLED if states == {CANCELLED} else FAILED

    @property
    def fraction(self) -> float:
        return sum(t.fraction for t in self.trackers) / max(1, len(self.trackers))

    def concerns(self, event) -> bool:
        return any(t.concerns(event) for t in self.trackers)

    def apply(self, event) -> bool:
        return any([t.apply(event) for t in self.trackers])  # a list: a death ends every job

    def sent_ids(self) -> list[str]:
        """The ids of the jobs sent and not ended yet (what a cancel asks the backend to stop)."""
        return [t.id for t in self.trackers if t.id and not t.finished]

    def status_text(self) -> str:
        n = len(self.trackers)
        if not self.finished:
            if not self.sent:
                return f"Sending {n} jobs…"
            k, tracker = next((k, t) for k, t in enumerate(self.trackers, 1) if not t.finished)
            return f"Job {k}/{n} · {tracker.status_text()}"
        done = sum(t.state == DONE for t in self.trackers)
        return f"{done} of {n} jobs ready" + (f", {n - done} failed or cancelled" if done < n else "")

    # --- sending and waiting ------------------------------------------------------------------

    def send(self, session, jobs: list[dict]) -> None:
        """Send each job (a generate request's fields: input, output_dir, parameters); a job that cannot
        be sent fails alone. Starting the backend first: when that fails, every job fails with it."""
        try:
            if session.hello is None:
                session.hello = self.client.start()
            for tracker, job in zip(self.trackers, jobs, strict=True):
                fields = dict(job)
                if self.cancel_requested:
                    tracker.state = CANCELLED
                    continue
                try:
                    tracker.id = self.client.generate(fields.pop("input"), fields.pop("output_dir"),
                                                      should_cancel=lambda: self.cancel_requested, **fields)
                except Exception as e:
                    tracker.apply(UserError.from_exception(e).event(tracker.id))
        except Exception as e:
            error = UserError.from_exception(e)
            for tracker in self.trackers:
                tracker.apply(error.event(tracker.id))
        finally:
            self.sent = True
        if self.cancel_requested:
            self.cancel()

    def cancel(self) -> None:
        """Ask the backend to stop every job of the batch, once; while jobs are still being sent, the
        sender sends no more and calls this when it is done."""
        self.cancel_requested = True
        if self.sent and not self._cancel_sent:
            self._cancel_sent = True
            for job_id in self.sent_ids():
                self.client.cancel(job_id)

    def run_to_end(self, timeout: float | None = None) -> BatchJob:
        """Block until every job ends (background mode); `timeout` s after the batch was made (the
        backend's start included) the rest are cancelled."""
        deadline = None if timeout is None else self.created + timeout
        for tracker in (t for t in self.trackers if not t.finished):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait_or_cancel(self.client, tracker, left, self.cancel)  # the first time out cancels them all
        return self


def submit(session, config, backend_root: str, jobs: list[dict], *, in_thread: bool = False) -> BatchJob:
    """Send the batch's jobs through the session's client and make the batch the session's job (the
    panel shows its progress, Cancel stops it). With `in_thread` the sending (uploads to a remote
    backend included) happens on a worker thread and the caller never waits."""
    if session.busy:
        raise UserError("busy", "A variant is already being generated",
                        "wait for it to finish, or press Cancel in the Variants panel")
    batch = BatchJob([JobTracker(id="", folder=str(job["output_dir"])) for job in jobs],
                     client=session.client(config, backend_root))
    session.job = batch
    if in_thread:
        threading.Thread(target=batch.send, args=(session, jobs), name="texture-variants-batch", daemon=True).start()
    else:
        batch.send(session, jobs)
    return batch
