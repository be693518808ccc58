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
)
from backend.service.request_checks import parse_request
from backend.service.transfer import (
    DEFAULT_BUDGET_MB,
    DEFAULT_UPLOAD_IDLE_S,
    Workspace,
    probe_matches,
    sweep_stale,
    write_error,
)
from backend.service.warmup import Warmup, availability

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0  # how long shutdown waits for a running job to notice its cancel
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")  # handled like stdin closing (SIGHUP: the ssh link hung up)


class _Signalled(Exception):
    """Raised by the signal handler to end a blocking read of stdin."""


def isolate_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Take private handles on stdin/stdout for the protocol; point fds 0 and 1 elsewhere.

    After this, anything that writes to fd 1 (print, tqdm, a C extension) lands on stderr, and
    nothing but the service can read the requests.
    """
    sys.stdout.flush()
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    protocol_in = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return protocol_in, protocol_out


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
                 records: Path | None = None):
        """`records`: where jobs record their staging folders (None: no records; serve() gives one)."""
        self._out = out
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
                        python=sys.version.split()[0], pid=os.getpid(), engines=self._engines(),
                        models=self._models(), requests=list(REQUEST_TYPES), parameters=generate_parameters(),
                        restyle=restyle_parameters(), make_tileable=tileable_parameters(),
                        upscale={"fields": list(UPSCALE_FIELDS), "choices": {"factor": list(UPSCALE_FACTORS)}},
                        loaded_models=registry.loaded(),
                        filesystem=self._filesystem(request.fields.get("probe"), request.id), **self.warmup.fields()))

    def _filesystem(self, probe: dict | None, request_id) -> dict:
        """Shared unless started with --remote or the client's probe file cannot be read here; a
        client without a probe is taken to share it. Not shared: files cross as uploads/downloads."""
        shared = not self.remote and (probe is None or probe_matches(probe))
        try:
            return {"shared": shared, "workspace": None if shared else str(self.workspace.root)}
        except OSError as e:  # the workspace cannot be made (a full disk)
            raise write_error(e, "hello: the workspace", "free disk space on the server", request_id) from None

    def _engines(self) -> dict:
        """{name: {available, why}}, from each engine's own cheap check (files only, no loading)."""
        found = {}
        for name in engines.ENGINE_MODULES:
            try:
                ok, why = availability(name, self.base, self.ip_adapter)
            except Exception as e:  # an engine that cannot even be imported is reported, not fatal
                ok, why = False, f"cannot load the {name} engine: {type(e).__name__}: {e}"
            found[name] = {"available": bool(ok), "why": why}
        return found

    def _models(self) -> dict:
        """Which diffusion models are on this machine: the configured ones and the default downloads."""
        from backend.diffusion import models

        ok, why = models.available(self.base, self.ip_adapter)
        return {"base": self.base or models.DEFAULT_BASE, "ip_adapter": self.ip_adapter or models.DEFAULT_IP_ADAPTER,
                "configured_present": bool(ok), "why": why, "defaults_present": models.models_present()}

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
                  upscale=f.get("upscale", 0), tileable=f.get("tileable"))
        if self.workspace.contains(job.output_dir):  # its files count against the workspace's budget
            job.room = lambda: self.workspace.job_room(job.id)
        # accepted goes out before the worker can see the job, so before any of its progress
        self.runner.submit(job, lambda ahead: self.emit(event("accepted", request.id, job=request.id,
                                                              position=ahead)))

    _on_restyle = _on_generate  # a restyle request is a generate job with the restyle options set
    _on_upscale = _on_generate  # and an upscale request one whose result is the input enlarged

    def _on_make_tileable(self, request: Request) -> None:
        """A job like generate's whose work is backend.api.make_tileable (the input made tileable)."""
        from backend.params import GenerationParams

        f = dict(request.fields)
        options = {k: f.pop(k) for k in ("engine", "band", "flatten", "tile", "maps")}
        fields = f | {"params": GenerationParams.build({}, engine="patch", maps=options["maps"]),
                      "base": None, "ip_adapter": None, "tiled_preview": False, "preview_every": 0,
                      "maps_only": False, "tileable": options}
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

        # Read on a thread of its own: a stuck read ends the job (cancel, timeout), not the queue.
        ref = read_reference(reference, cancel=cancel)
        label = self.workspace.label(reference)
        if label is not None:  # an upload: its results record the client's path, as a local run would
            ref = dataclasses.replace(ref, source=label)
        tileable, factor = kwargs.pop("tileable", None), kwargs.pop("upscale", 0)
        if tileable is not None:
            from backend.api import make_tileable

            images = [make_tileable(ref, **tileable, cancel=cancel)]
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
          upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S, models: tuple[str, ...] = ()) -> int:
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
                      upload_idle_s=upload_idle_s, models=models, records=records)
    return service.serve(protocol_in)
