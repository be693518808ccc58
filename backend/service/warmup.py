"""Start-up work of the service that must never delay `hello`: finding the torch device, importing
the diffusion engine, and answering which engines are available without importing torch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from backend import engines

log = logging.getLogger(__name__)


class Warmup:
    """Background start-up work, so that `hello` never waits for torch to import.

    It finds the torch device (until then `device` is None and `device_detail` says so; `status`
    reports it later), then imports the diffusion engine when its models are here, so the first
    job does not pay for importing diffusers. Loading models is left to the first job.

    Without the diffusion models the device is found in a child process instead: torch then stays
    out of this process (only a diffusion job would import it), so a first patch job never waits
    for a half-done import of torch (libraries such as scipy peek at `sys.modules["torch"]`).
    """

    def __init__(self, requested: str | None, base: str | None, ip_adapter: str | None):
        self.requested, self.base, self.ip_adapter = requested, base, ip_adapter
        self.device: str | None = None
        self.detail = "detecting (torch is loading)"
        self.torch_version: str | None = None
        # Set once the import of torch is over (done or failed): until then sys.modules may hold a
        # half-imported torch, which libraries that peek at it (scipy's array API checks) trip over.
        self.torch_settled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warmup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            diffusion = availability("diffusion", self.base, self.ip_adapter)[0]
        except Exception:  # noqa: BLE001 (a broken model path: the job that needs it says so)
            diffusion = False
        if not diffusion:
            self.torch_settled.set()  # nothing imports torch here
            self._probe_elsewhere()
            return
        try:
            self._probe()
        finally:
            self.torch_settled.set()
        try:
            engines.get_engine("diffusion")
        except Exception as e:  # the job that needs it will report the problem properly
            log.info("warm-up: diffusion engine not imported (%s: %s)", type(e).__name__, e)

    def _probe_elsewhere(self) -> None:
        """`_probe` in a child Python, its answer read back as JSON."""
        root = Path(__file__).resolve().parents[2]
        try:
            out = subprocess.run([sys.executable, "-c", PROBE, self.requested or ""], cwd=root, capture_output=True,
                                 text=True, timeout=PROBE_TIMEOUT_S)
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            self.torch_version, self.device, self.detail = answer["torch"], answer["device"], answer["detail"]
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as e:
            self.device, self.detail = "cpu", f"torch unusable ({type(e).__name__}: {e}); only the patch engine can run"

    def _probe(self) -> None:
        from backend.errors import InputError

        try:
            import torch

            from backend.diffusion.models import select_device

            self.torch_version = torch.__version__
            device, dtype = select_device(self.requested)
            if device.startswith("cuda"):
                detail = f"{torch.cuda.get_device_name(torch.device(device))}, {dtype}"
            else:
                detail = f"{os.cpu_count()} CPU cores, {dtype}" if device == "cpu" else f"Apple GPU, {dtype}"
        except InputError as e:  # an unusable --device: diffusion jobs will say so too
            device, detail = None, f"{e.message} ({e.hint})"
        except Exception as e:  # torch missing or broken: the weight-free engine still works
            device, detail = "cpu", f"torch unusable ({type(e).__name__}: {e}); only the patch engine can run"
        self.device, self.detail = device, detail

    def wait(self, timeout: float | None = None) -> str | None:
        self._thread.join(timeout)
        return self.device

    def fields(self) -> dict:
        return {"device": self.device, "device_detail": self.detail, "torch": self.torch_version}


PROBE_TIMEOUT_S = 300.0
# The child's probe: the same answer as Warmup._probe, as one JSON line.
PROBE = """
import json, os, sys
from backend.service.warmup import Warmup
probe = Warmup.__new__(Warmup)
probe.requested, probe.torch_version = sys.argv[1] or None, None
probe._probe()
print(json.dumps({"torch": probe.torch_version, "device": probe.device, "detail": probe.detail}))
"""


def availability(engine: str, base, ip_adapter) -> tuple[bool, str]:
    """An engine's `available()`, without importing torch to answer hello.

    The diffusion engine's `available()` is its model lookup, `backend.diffusion.models.available` (files
    only); asking that module directly spares hello the import of torch and diffusers (seconds),
    and never waits for the warm-up thread that may be importing them. test_service checks that
    both give the same answer.
    """
    if engine == "diffusion":
        from backend.diffusion import models

        return models.available(base, ip_adapter)
    return engines.get_engine(engine).available(base, ip_adapter)


def engines_report(base: str | None, ip_adapter: str | None) -> dict:
    """{name: {available, why}} for `hello`, from each engine's own cheap check (files only, no loading)."""
    found = {}
    for name in engines.ENGINE_MODULES:
        try:
            ok, why = availability(name, base, ip_adapter)
        except Exception as e:  # an engine that cannot even be imported is reported, not fatal
            ok, why = False, f"cannot load the {name} engine: {type(e).__name__}: {e}"
        found[name] = {"available": bool(ok), "why": why}
    return found


def models_report(base: str | None, ip_adapter: str | None) -> dict:
    """Which diffusion models are on this machine, for `hello`: the configured ones and the default downloads."""
    from backend.diffusion import models

    ok, why = models.available(base, ip_adapter)
    return {"base": base or models.DEFAULT_BASE, "ip_adapter": ip_adapter or models.DEFAULT_IP_ADAPTER,
            "configured_present": bool(ok), "why": why, "defaults_present": models.models_present()}
