"""One generation job as the add-on sees it: the backend's events folded into a state.

Plain Python (no bpy) so it is unit-tested outside Blender: the modal operator feeds it the events
of `BackendClient.poll()` on a timer, background mode feeds it from `BackendClient.wait()`, and
the panel only reads it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import parameters

# The states a job goes through; the last three are final.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ENDS_EVERY_JOB = ("backend_died", "backend_stalled")  # client-made errors about the process, not one job
FINAL_STATES = (DONE, FAILED, CANCELLED)
SIZE = parameters.sizes()  # the backend's range of output sides
ETA_WINDOW = 8  # the ETA is the median of the last this-many step times

# The panel settings that go to the backend unchanged (names of the backend's Python API).
REQUEST_SETTINGS = ("engine", "variants", "steps", "size", "tile", "balance", "appearance")
# Panel settings that become backend parameters under other names (InstantStyle: see request_params).
STYLE_SETTINGS = ("style_only", "suppress_content")
# Text prompts (diffusion only; the patch engine takes none, so they are sent only when set).
PROMPT_SETTINGS = ("prompt", "negative_prompt")
# Structure-guide settings, sent when a guide image goes with the job.
SKETCH_SETTINGS = ("sketch_mode", "sketch_strength")


def new_seed(rng: random.Random | None = None) -> int:
    """A fresh seed in the range every engine accepts; the add-on stores it so a result can be redone."""
    return (rng or random.SystemRandom()).randrange(2**31)


def backend_size(value) -> list[int]:
    """The request's `size`, [width, height], from a pair or an int (a square), each side within the
    backend's range (the engine's multiple is the size plan's: pixels/sizing.py)."""
    width, height = (value, value) if isinstance(value, int | float) else value
    return [min(SIZE["high"], max(SIZE["low"], int(side))) for side in (width, height)]


def request_params(settings: Mapping, seed: int, sketch: str | None = None) -> dict:
    """The generate request's parameters from the panel settings (a mapping of their values);
    `sketch`: the path of the structure guide written into the job folder, if any."""
    params = {name: settings[name] for name in REQUEST_SETTINGS}
    params["balance"] = float(params["balance"])
    if settings.get("sampler", "full") != "full" and params["engine"] != "patch":
        params["sampler"] = settings["sampler"]  # sent only when not the default (the patch engine has none)
    params["size"] = backend_size(params["size"])
    params["seed"] = int(seed)
    # "Style only" = the backend's ip_mode "style"; the content text goes with it (and only then).
    # Left out when off, so the request holds the backend's defaults and nothing else.
    if settings.get("style_only"):
        params["ip_mode"] = "style"
        content = str(settings.get("suppress_content", "")).strip()
        if content:
            params["suppress_content"] = content
            if settings.get("content_encoder"):
                params["extra"] = {"content_encoder": str(settings["content_encoder"])}
    for name in PROMPT_SETTINGS:
        text = str(settings.get(name, "")).strip()
        if text and params["engine"] != "patch":
            params[name] = text
    if sketch:
        params["sketch"] = str(sketch)
        params["sketch_mode"] = settings["sketch_mode"]
        params["sketch_strength"] = float(settings["sketch_strength"])
    return params


# Restyle: the panel settings sent with a restyle request besides the mask (backend names).
RESTYLE_SETTINGS = ("variants", "steps", "size", "tile", "restyle_prompt", "restyle_strength", "restyle_start")


def restyle_params(settings: Mapping, seed: int, mask: str | None = None, points=None) -> dict:
    """The restyle request's parameters: the shared settings, the prompt, and the mask (a file) or
    the points ((x, y, label) in input pixels); the mask mode only with one of them."""
    params = {name: settings[name] for name in RESTYLE_SETTINGS}
    params["restyle_strength"] = float(params["restyle_strength"])
    params["size"] = backend_size(params["size"])
    params["seed"] = int(seed)
    if mask is not None:
        params["mask"] = str(mask)
    elif points:
        params["mask_points"] = [list(p) for p in points]
    if mask is not None or points:
        params["mask_mode"] = settings["mask_mode"]
    return params


def points_in_pixels(points, width: int, height: int) -> list[tuple[float, float, int]]:
    """(u, v, negative) points, Blender's image coordinates (0-1 from the bottom-left), as the
    backend's (x, y, label): pixels of the input from its top-left, label 1 selects, 0 excludes."""
    def clamp(value, top):
        return min(max(value, 0.0), top - 0.5)

    return [(clamp(u * width, width), clamp((1.0 - v) * height, height), 0 if negative else 1)
            for u, v, negative in points]


def format_seconds(seconds: float | None) -> str:
    """"1:05" style; "" when unknown, so the panel can leave it out."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class JobTracker:
    """The add-on's view of one generate job: its state, built only from the events the backend sent for it.

    `folder` is the job folder: the add-on makes it (with the reference copy in it), the backend
    writes the variants into it, and the result's `files` say which files those are.
    """

    id: str
    folder: str = ""
    state: str = QUEUED
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    preview: str | None = None  # path of the latest live preview image, if the engine sent one
    files: list[dict] = field(default_factory=list)  # the result's [{path, parameters, tiled?}, ...]
    error: dict | None = None  # {"code", "message", "hint"} when state is FAILED
    cancel_requested: bool = False
    preview_serial: int = 0  # bumps on every new preview so the UI knows to reload it
    marks: list[tuple[int, float]] = field(default_factory=list)  # (step, backend elapsed s) per progress event
    created: float = field(default_factory=time.monotonic)  # the click: a time-out counts from here

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def fraction(self) -> float:
        if self.state == DONE:
            return 1.0
        return min(1.0, self.step / self.total) if self.total else 0.0

    def sent_ids(self) -> list[str]:
        """[its id] once the job is sent (what a cancel asks the backend to stop), else []."""
        return [self.id] if self.id else []

    def concerns(self, event: Mapping) -> bool:
        """True for this job's events, and for a dead backend (which ends every job)."""
        return event.get("id") == self.id or (event.get("type") == "error" and event.get("code") in ENDS_EVERY_JOB)

    def apply(self, event: Mapping) -> bool:
        """Fold one event into the state; returns True when it changed something the UI shows."""
        if self.finished or not self.concerns(event):
            return False
        kind = event.get("type")
        if kind == "accepted":
            self.state = RUNNING
        elif kind == "progress":
            self.state = RUNNING
            self.step = int(event.get("step", self.step))
            self.total = int(event.get("total", self.total))
            self.elapsed = float(event.get("elapsed", self.elapsed))
            self.marks.append((self.step, self.elapsed))
            self.eta = self.measured_eta()
            if self.eta is None and event.get("eta") is not None:
                self.eta = float(event["eta"])
            if event.get("preview"):
                self.preview = event["preview"]
                self.preview_serial += 1
        elif kind == "result":
            self.state = DONE
            self.files = list(event.get("files", []))
            self.eta = 0.0
        elif kind == "cancelled":
            self.state = CANCELLED
        elif kind == "error":
            self.state = FAILED
            self.error = {
                "code": event.get("code", "internal"),
                "message": event.get("message", "the backend reported an error"),
                "hint": event.get("hint", ""),
            }
        else:
            return False
        return True

    def measured_eta(self) -> float | None:
        """Seconds left from the median of the latest step times, or None until two steps were measured.

        The first interval is left out (it holds model loading), and a median of a few recent steps
        does not jump with one slow or fast step, so the estimate reads steadily.
        """
        rates = []
        for (s0, t0), (s1, t1) in zip(self.marks[1:], self.marks[2:], strict=False):
            if s1 > s0:
                rates.append((t1 - t0) / (s1 - s0))
        if len(rates) < 2 or not self.total:
            return None
        return max(0.0, statistics.median(rates[-ETA_WINDOW:]) * (self.total - self.step))

    def status_text(self) -> str:
        """One line for the progress bar: step, total and time left."""
        if self.state == QUEUED:
            return "Starting the backend…"
        if self.state == RUNNING:
            if self.cancel_requested:
                return "Cancelling…"
            if not self.total:
                return "Loading models…"
            eta = format_seconds(self.eta)
            return f"Step {self.step}/{self.total}" + (f" · {eta} left" if eta else "")
        if self.state == DONE:
            n = len(self.files)
            return f"{n} variant{'s' if n != 1 else ''} ready"
        if self.state == CANCELLED:
            return "Cancelled"
        return self.error["message"] if self.error else "Failed"
