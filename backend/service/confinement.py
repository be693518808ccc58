"""What a job request may name, checked before it is queued (docs/PROTOCOL.md, "Transfers").

With `serve --remote` every path a job reads or writes must be inside the service's workspace
(resolved: no `..` or link leads out), its job folder must be `<workspace>/jobs/<name>`, and a model
named by a path must be in the workspace or a `serve --models` folder. Whether a map file exists is
asked only after that, so a path the request may not read gets no answer about its existence. In any
mode an upload still in progress cannot be used, and a job into the workspace needs room to start.
"""

from __future__ import annotations

import os

from backend.service.job_request_checks import check_map_files
from backend.service.protocol import ProtocolError, Request
from backend.service.transfer import Workspace


def confine(workspace: Workspace, f: dict, params, request: Request, *, remote: bool, models: tuple[str, ...]) -> None:
    """ProtocolError (`outside_workspace`, `bad_request`, `no_space`) when the request may not run."""
    paths = {"input": f["input"], "output_dir": f["output_dir"], "mask": params.diffusion.mask,
             "sketch": params.sketch, **{f"maps.{name}": path for name, path in params.maps.items()}}
    outside = [name for name, path in paths.items() if path is not None and not workspace.contains(path)]
    if remote and outside:
        raise ProtocolError("outside_workspace", f"{request.type}: {' and '.join(outside)} must be inside this "
                            "service's workspace (serve --remote)",
                            "upload the input (upload_begin) and put the job folder in the workspace's "
                            "jobs/ folder that hello names", request.id)
    if remote:
        _check_model_paths(workspace, f, params, request, models)
    check_map_files(params.maps, request.id)
    unfinished = [name for name, path in paths.items() if path is not None and workspace.unfinished(path)]
    if unfinished:
        raise ProtocolError("bad_request", f"{request.type}: {' and '.join(unfinished)} is an upload still in "
                            "progress", "send upload_end first and use the path it answers", request.id)
    if remote and not workspace.job_folder(f["output_dir"]):
        raise ProtocolError("outside_workspace", f"{request.type}: output_dir must be a job folder "
                            "<workspace>/jobs/<name>", "put the job folder in the workspace's jobs/ folder "
                            "that hello names", request.id)
    if workspace.contains(f["output_dir"]):  # a job writes there: it must have room to start
        workspace.require(1, f"{request.type}", request.id)


def _check_model_paths(workspace: Workspace, f: dict, params, request: Request, models: tuple[str, ...]) -> None:
    """A model named by a path must be in the workspace or a `serve --models` folder (hub ids, and the
    starter's own --base / --ip-adapter, are fine)."""
    d = params.diffusion
    named = {"base": f["base"], "ip_adapter": f["ip_adapter"], "extra.lgp": d.lgp, "extra.controlnet": d.controlnet,
             "extra.content_encoder": d.content_encoder, "sam": d.sam}
    for name, value in named.items():
        if not value or not (os.path.isabs(value) or value.startswith((".", "~"))):
            continue
        real = os.path.realpath(os.path.expanduser(value))
        if workspace.contains(real) or any(real == m or real.startswith(m + os.sep) for m in models):
            continue
        raise ProtocolError("outside_workspace", f"{request.type}: {name} names a path outside the workspace "
                            "and the server's model folders (serve --remote)", "name a hub id, or start the "
                            "service with --models DIR for the folder that holds it", request.id)
