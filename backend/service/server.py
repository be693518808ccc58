"""`python -m backend serve`: the long-lived backend process the Blender extension talks to.

Requests arrive on stdin and events leave on stdout, one JSON object per line (backend.service.protocol,
docs/PROTOCOL.md). The reader (main thread) answers hello/status/cancel at once; generate jobs run
one at a time on the worker thread (backend.service.jobs), so models stay loaded between jobs. No socket is
opened. stdout carries protocol lines only: at start the real stdout is moved to a private file
descriptor and fd 1 is pointed at stderr, so even a C library's printf cannot corrupt the stream.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from backend import __version__, engines
from backend.model_registry import registry
from backend.params import UPSCALE_FACTORS
from backend.service.confinement import confine
from backend.service.encoding import encode
from backend.service.heartbeat import DEFAULT_HEARTBEAT_S, Heartbeat
from backend.service.job_folder import sweep_unfinished
from backend.service.jobs import DEFAULT_MAX_QUEUE, Job, JobRunner
from backend.service.memory import memory_report
from backend.service.protocol import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    UPSCALE_FIELDS,
    ProtocolError,
    Request,
    error_event,
    event,
    generate_parameters,
    restyle_parameters,
    tileable_parameters,
    tileset_parameters,
)
from backend.service.request_checks import parse_request
from backend.service.stdio import isolate_stdio
from backend.service.transfer import (
    DEFAULT_BUDGET_MB,
    DEFAULT_UPLOAD_IDLE_S,
    Workspace,
    probe_matches,
    sweep_stale,
    write_error,
)
from backend.service.warmup import Warmup, engines_report, models_report

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0  # how long shutdown waits for a running job to notice its cancel
TORCH_IMPORT_WAIT_S = 120.0  # how long the first job waits for the warm-up's import of torch to end
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")  # handled like stdin closing (SIGHUP: the ssh link hung up)


class _Signalled(Exception):
    """Raised by the signal handler to end a blocking read of stdin."""




def _loaded_engine_modules():
    """Engine modules a job has already imported (asking the others would import torch for nothing)."""
    for name, module_name in engines.ENGINE_MODULES.items():
        module = sys.modules.get(module_name)
        if module is not None:
            yield name, module


class Service:
    def __init__(self, out: BinaryIO, *, base: str | None = None, ip_adapter: str | None = None,
                 device: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, allow_pickle: bool = False,
                 remote: bool = False, max_workspace_mb: int = DEFAULT_BUDGET_MB,
                 upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S, models: tuple[str, ...] = (),
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, records: Path | None = None):
        """`records`: where jobs record their staging folders (None: no records; serve() gives one)."""
        self._out = out
        self.heartbeat = Heartbeat(self.emit, heartbeat_s)  # sent while serve() reads requests
        self.models = tuple(os.path.realpath(m) for m in models)  # serve --models: model folders requests may name
        self.remote = remote  # serve --remote: clients never share this file system
        self.workspace = Workspace(max_workspace_mb, upload_idle_s)
        self._out_lock = threading.Lock()
        self._out_broken = False
        self.base, self.ip_adapter = base, ip_adapter
        self.allow_pickle = allow_pickle
        self.warmup = Warmup(device, base, ip_adapter)
        self.started = time.monotonic()
        self.runner = JobRunner(self.emit, self._generate, max_queue=max_queue, records=records)
        self._stop = False
        self._reading = False  # the main thread is blocked reading stdin (a signal may interrupt it)

    # --- output ---------------------------------------------------------------------------------

    def emit(self, ev: dict) -> None:
        data = encode(ev)
        with self._out_lock:
            if self._out_broken:
                return
            try:
                view = memoryview(data)
                while view:  # a raw write may take only part of a long line
                    view = view[self._out.write(view):]
                self._out.flush()
            except (BrokenPipeError, OSError) as e:  # the client went away; keep going to a clean exit
                self._out_broken = True
                log.warning("cannot write events any more (%s); the client is gone", e)

    # --- input ----------------------------------------------------------------------------------

    def serve(self, stdin: BinaryIO) -> int:
        """Answer requests until shutdown, end of input or SIGTERM/SIGINT; always ends with exit code 0."""
        log.info("serving protocol %d (backend %s, pid %d)", PROTOCOL_VERSION, __version__, os.getpid())
        self._handle_stop_signals()
        self.heartbeat.start()
        try:
            while not self._stop:
                line = self._readline(stdin, MAX_LINE_BYTES + 1)
                if not line:
                    log.info("stdin closed: cancelling work and exiting")
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # skip the rest of the runaway line
                        line = self._readline(stdin, MAX_LINE_BYTES)
                    self.emit(ProtocolError("line_too_long", f"request line longer than {MAX_LINE_BYTES} bytes",
                                            "send one small JSON object per line; images travel as file paths"
                                            ).event())
                    continue
                self.handle(line.rstrip(b"\r\n"))
        except (KeyboardInterrupt, _Signalled):
            log.info("interrupted: cancelling work and exiting")
        if not self.runner.stop(STOP_TIMEOUT_S):
            log.warning("the running job did not stop within %.0f s; exiting anyway", STOP_TIMEOUT_S)
        self.workspace.cleanup()
        self.heartbeat.stop()
        log.info("bye")
        return 0

    def _readline(self, stdin: BinaryIO, limit: int) -> bytes:
        self._reading = True
        try:
            return stdin.readline(limit)
        finally:
            self._reading = False

    def _handle_stop_signals(self) -> None:
        """SIGTERM and SIGINT end the service like stdin closing: cancel, clean up, exit 0."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame) -> None:
            log.info("signal %s received", signal.Signals(signum).name)
            self._stop = True
            if self._reading:  # blocked in readline: end it; elsewhere the loop sees _stop next
                raise _Signalled()

        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), stop)

    def handle(self, line: bytes) -> None:
        try:
            request = parse_request(line)
        except ProtocolError as e:
            log.info("refused a line: %s", e.message)
            if e.upload is not None:
                self.workspace.abort(e.upload)
            self.emit(e.event())
            return
        try:
            getattr(self, f"_on_{request.type}")(request)
        except ProtocolError as e:
            self.emit(e.event())
        except Exception as e:
            log.exception("request %r (%s) failed", request.id, request.type)
            self.emit(error_event(request.id, "internal", f"{type(e).__name__}: {e}",
                                  "see the backend log for the traceback"))

    # --- requests -------------------------------------------------------------------------------

    def _on_hello(self, request: Request) -> None:
        self.emit(event("hello", request.id, protocol=PROTOCOL_VERSION, version=__version__,
                        python=sys.version.split()[0], pid=os.getpid(), engines=engines_report(self.base, self.ip_adapter),
                        models=models_report(self.base, self.ip_adapter), requests=list(REQUEST_TYPES), parameters=generate_parameters(),
                        restyle=restyle_parameters(), make_tileable=tileable_parameters(), **tileset_parameters(),
                        upscale={"fields": list(UPSCALE_FIELDS), "choices": {"factor": list(UPSCALE_FACTORS)}},
                        loaded_models=registry.loaded(),
                        filesystem=self._filesystem(request.fields.get("probe"), request.id),
                        heartbeat_s=self.heartbeat.interval or None, **self.warmup.fields()))

    def _filesystem(self, probe: dict | None, request_id) -> dict:
        """Shared unless started with --remote or the client's probe file cannot be read here; a
        client without a probe is taken to share it. Not shared: files cross as uploads/downloads."""
        shared = not self.remote and (probe is None or probe_matches(probe))
        try:
            return {"shared": shared, "workspace": None if shared else str(self.workspace.root)}
        except OSError as e:  # the workspace cannot be made (a full disk)
            raise write_error(e, "hello: the workspace", "free disk space on the server", request_id) from None

    def _on_generate(self, request: Request) -> None:
        if self._stop:
            raise ProtocolError("shutting_down", "the service is shutting down", "start a new service",
                                request.id)
        if self.runner.is_active(request.id):
            raise ProtocolError("duplicate_id", f"a job with id {request.id!r} is already queued or running",
                                "give every request a new id", request.id)
        f = request.fields
        params = f["params"]
        confine(self.workspace, f, params, request, remote=self.remote, models=self.models)
        if self.allow_pickle:  # the starter's choice (serve --allow-pickle); requests cannot set it
            params = params.replace(diffusion=dataclasses.replace(params.diffusion, allow_pickle=True))
        job = Job(id=request.id, input=f["input"], output_dir=f["output_dir"], params=params,
                  base=f["base"] or self.base, ip_adapter=f["ip_adapter"] or self.ip_adapter,
                  tiled_preview=f["tiled_preview"], preview_every=f["preview_every"], maps_only=f["maps_only"],
                  upscale=f.get("upscale", 0), tileable=f.get("tileable"), tileset=f.get("tileset"),
                  tileset_layout=f.get("tileset_layout"))
        if self.workspace.contains(job.output_dir):  # its files count against the workspace's budget
            job.room = lambda: self.workspace.job_room(job.id)
        # accepted goes out before the worker can see the job, so before any of its progress
        self.runner.submit(job, lambda ahead: self.emit(event("accepted", request.id, job=request.id,
                                                              position=ahead)))

    _on_restyle = _on_generate  # a restyle request is a generate job with the restyle options set
    _on_upscale = _on_generate  # and an upscale request one whose result is the input enlarged

    def _on_make_tileable(self, request: Request) -> None:
        """A job like generate's whose work is backend.api.make_tileable (the input made tileable)."""
        self._special_job(request, "tileable", ("engine", "band", "flatten", "tile", "maps", "seed", "steps"),
                          models=True)

    def _on_tileset(self, request: Request) -> None:
        """A job like generate's whose work is backend.api.make_tileset (a Wang tile set of the input)."""
        self._special_job(request, "tileset", ("colours", "size", "padding", "engine", "maps", "seed", "steps"),
                          models=True)

    def _on_tileset_layout(self, request: Request) -> None:
        """A job whose work is backend.api.tileset_layout (cells of a saved tile set; `input` its JSON)."""
        self._special_job(request, "tileset_layout", ("cells", "seed"))

    def _special_job(self, request: Request, kind: str, names: tuple[str, ...], models: bool = False) -> None:
        """A job like generate's (queue, events, cancel, files) whose work is another API call: the
        request's `names` become the Job's `kind` options."""
        from backend.params import GenerationParams

        f = dict(request.fields)
        options = {k: f.pop(k) for k in names}
        base, ip_adapter = (f.pop("base"), f.pop("ip_adapter")) if models else (None, None)
        fields = f | {"params": GenerationParams.build({}, engine="patch", maps=options.get("maps", {})),
                      "base": base, "ip_adapter": ip_adapter, "tiled_preview": False, "preview_every": 0,
                      "maps_only": False, kind: options}
        self._on_generate(dataclasses.replace(request, fields=fields))

    def _on_cancel(self, request: Request) -> None:
        job_id = request.fields["job"]
        stage = self.runner.cancel(job_id)
        if stage is None:
            raise ProtocolError("unknown_job", f"no queued or running job has id {job_id!r}",
                                "it may have finished already; its result or error event says so", request.id)
        self.emit(event("ack", request.id, request="cancel", job=job_id, stage=stage))

    def _on_status(self, request: Request) -> None:
        self.emit(event("status", request.id, **self.runner.snapshot(), loaded_models=registry.loaded(),
                        model_loads=registry.load_count(),
                        memory=memory_report(self.warmup.torch_version is not None), **self.warmup.fields(),
                        uptime=round(time.monotonic() - self.started, 3)))

    def _on_unload(self, request: Request) -> None:
        def unload() -> dict:
            freed = registry.loaded()
            for _, module in _loaded_engine_modules():  # the engines' own caches (reference work)
                fn = getattr(module, "unload", None)
                if fn is not None:
                    fn()
            registry.unload()
            log.info("unloaded %d model(s)", len(freed))
            return event("ack", request.id, request="unload", freed=freed, memory=memory_report(self.warmup.torch_version is not None))

        # Models belong to the worker thread: unloading waits for the running job, never pulls them away.
        self.runner.run_between_jobs(request.id, unload)

    def _on_upload_begin(self, request: Request) -> None:
        f = request.fields
        self.workspace.begin(request.id, f["name"], f["size"], f["sha256"])
        self.emit(event("ack", request.id, request="upload_begin", upload=request.id))

    def _on_upload_chunk(self, request: Request) -> None:  # no answer unless it is refused
        f = request.fields
        self.workspace.chunk(f["upload"], f["offset"], f["data"], request.id)

    def _on_upload_end(self, request: Request) -> None:
        upload = request.fields["upload"]
        path = self.workspace.end(upload, request.id)
        self.emit(event("ack", request.id, request="upload_end", upload=upload, path=str(path)))

    def _on_download(self, request: Request) -> None:
        f = request.fields
        chunks = self.workspace.read_chunks(f["path"], f["chunk_bytes"], request.id)
        while True:
            try:
                offset, data = next(chunks)
            except StopIteration as end:
                size, digest = end.value
                break
            self.emit(event("chunk", request.id, path=f["path"], offset=offset, data=data))
        self.emit(event("ack", request.id, request="download", path=f["path"], size=size, sha256=digest))

    def _on_release(self, request: Request) -> None:
        path = request.fields["path"]
        found = self.workspace.releasable(path, request.id)
        if self.runner.uses(found):
            raise ProtocolError("busy", f"release: a queued or running job uses {path!r}",
                                "release a job's files after its final event", request.id)
        removed = self.workspace.release(found)
        self.emit(event("ack", request.id, request="release", path=path, removed=removed))

    def _on_shutdown(self, request: Request) -> None:
        self.emit(event("ack", request.id, request="shutdown"))
        self._stop = True

    # --- jobs -----------------------------------------------------------------------------------

    def _generate(self, reference, params, *, cancel, **kwargs):
        from backend.api import generate
        from backend.images import read_reference

        deadline = time.monotonic() + TORCH_IMPORT_WAIT_S  # a job beside a half-imported torch can fail
        while not self.warmup.torch_settled.wait(0.1) and not cancel.is_set() and time.monotonic() < deadline:
            pass

        layout = kwargs.pop("tileset_layout", None)
        if layout is not None:  # the input is a tile set's JSON, not an image
            from backend.api import tileset_layout

            return [tileset_layout(reference, layout["cells"], seed=layout["seed"])]
        # Read on a thread of its own: a stuck read ends the job (cancel, timeout), not the queue.
        ref = read_reference(reference, cancel=cancel)
        label = self.workspace.label(reference)
        if label is not None:  # an upload: its results record the client's path, as a local run would
            ref = dataclasses.replace(ref, source=label)
        tileable, factor = kwargs.pop("tileable", None), kwargs.pop("upscale", 0)
        tileset = kwargs.pop("tileset", None)
        if tileset is not None:
            from backend.api import make_tileset

            on_step = kwargs.get("on_step")
            return [make_tileset(ref, **tileset, base=kwargs.get("base"), ip_adapter=kwargs.get("ip_adapter"),
                                 cancel=cancel, on_step=None if on_step is None else
                                 lambda step, total: on_step(step, total, None))]
        if tileable is not None:
            from backend.api import make_tileable

            images = [make_tileable(ref, **tileable, base=kwargs.get("base"), ip_adapter=kwargs.get("ip_adapter"),
                                    on_step=kwargs.get("on_step"), cancel=cancel)]
        elif factor:
            from backend.upscaling import upscale

            options = params.diffusion
            images = [upscale(ref, factor, maps=params.maps, engine=params.engine, seed=params.seed,
                              steps=params.steps, tile=params.tile, strength=options.upscale_strength,
                              window=options.window, base=kwargs.get("base"), ip_adapter=kwargs.get("ip_adapter"),
                              on_step=kwargs.get("on_step"), cancel=cancel)]
        else:
            images = generate(ref, params, cancel=cancel, **kwargs)
        for image in images:  # and so do its uploaded maps and mask
            if "parameters" in image.info:
                image.info["parameters"] = self.workspace.relabel(image.info["parameters"])
        return images


def serve(*, base: str | None = None, ip_adapter: str | None = None, device: str | None = None,
          verbose: bool = False, max_queue: int = DEFAULT_MAX_QUEUE, allow_pickle: bool = False,
          remote: bool = False, max_workspace_mb: int = DEFAULT_BUDGET_MB,
          upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S, models: tuple[str, ...] = (),
          heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> int:
    """Entry point of `python -m backend serve`."""
    from backend.service.logs import records_dir, setup_logging

    protocol_in, protocol_out = isolate_stdio()
    path = setup_logging(verbose)
    if path is not None:
        log.info("logging to %s", path)
    if device:
        os.environ["TEXTURE_VARIANTS_DEVICE"] = device  # the engines read it; one place for the choice
    for stale in sweep_stale():
        log.info("removed the workspace of a service that is gone: %s", stale)
    records = records_dir()
    for left in sweep_unfinished(records):
        log.warning("removed what a job of a service that is gone left unfinished: %s", left)
    service = Service(protocol_out, base=base, ip_adapter=ip_adapter, device=device, max_queue=max_queue,
                      allow_pickle=allow_pickle, remote=remote, max_workspace_mb=max_workspace_mb,
                      upload_idle_s=upload_idle_s, models=models, heartbeat_s=heartbeat_s, records=records)
    return service.serve(protocol_in)
