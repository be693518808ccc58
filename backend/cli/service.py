"""`serve` (the backend service) and `batch` (many jobs from a manifest)."""

from __future__ import annotations

import argparse

from backend.service.heartbeat import DEFAULT_HEARTBEAT_S
from backend.service.jobs import DEFAULT_MAX_QUEUE
from backend.service.transfer import DEFAULT_BUDGET_MB, DEFAULT_UPLOAD_IDLE_S


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the backend service (JSON lines on stdin/stdout; used by the Blender extension)",
        description="Run the long-lived backend service: read requests from stdin and write events to "
        "stdout, one JSON object per line (protocol in docs/PROTOCOL.md). stdout carries protocol lines "
        "only; logs go to stderr and to a rotating file in the user cache folder "
        "($TEXTURE_VARIANTS_LOG_DIR overrides it). Opens no network socket. Exits with code 0 on a "
        "shutdown request, when stdin closes, or on SIGTERM/SIGINT, cancelling the running job.",
    )
    p.add_argument("--base", help="default SD1.5 model for generate requests that name none "
                   "(hub id, diffusers folder or single .safetensors file)")
    p.add_argument("--ip-adapter", help="default IP-Adapter for generate requests that name none")
    p.add_argument("--device", help="torch device for the diffusion engine, e.g. cuda, mps, cpu "
                   "(default: the best one found)")
    p.add_argument("--max-queue", type=_positive_int, default=DEFAULT_MAX_QUEUE, metavar="N",
                   help="how many requests may wait for the worker; more are refused with a `busy` "
                   f"error (default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--allow-pickle", action="store_true",
                   help="let jobs load pickled model weights (.ckpt/.bin): loading them can run arbitrary "
                   "code, so only for models you trust; requests cannot switch this on")
    p.add_argument("--remote", action="store_true",
                   help="clients never share this machine's files (a backend reached over ssh): inputs and "
                   "results cross the channel (upload/download requests) and jobs may only read and write "
                   "in the service's private workspace; without it, hello decides from the client's probe")
    p.add_argument("--max-workspace-mb", type=_positive_int, default=DEFAULT_BUDGET_MB, metavar="MB",
                   help="the most the workspace may hold (uploads, open uploads and job outputs together); "
                   f"an upload or job beyond it is refused with `no_space` (default {DEFAULT_BUDGET_MB})")
    p.add_argument("--upload-idle-s", type=_positive_int, default=DEFAULT_UPLOAD_IDLE_S, metavar="S",
                   help="an open upload that gets no chunk for this long is abandoned: closed and its bytes "
                   f"removed (default {DEFAULT_UPLOAD_IDLE_S})")
    p.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="with --remote: a folder whose models requests may name by path (repeatable); other "
                   "paths outside the workspace are refused, hub ids are always fine")
    p.add_argument("--heartbeat-s", type=_interval, default=DEFAULT_HEARTBEAT_S, metavar="S",
                   help="send a `heartbeat` event every S seconds while serving, so a client notices a link "
                   f"that hangs (default {DEFAULT_HEARTBEAT_S:g}; 0 sends none)")
    p.set_defaults(func=_cmd_serve)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not (value == 0 or 0.1 <= value <= 3600):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or 0.1-3600 seconds, got {text}")
    return value


def _cmd_serve(args) -> int:
    from backend.service.server import serve

    return serve(base=args.base, ip_adapter=args.ip_adapter, device=args.device, verbose=args.verbose,
                 max_queue=args.max_queue, allow_pickle=args.allow_pickle, remote=args.remote,
                 max_workspace_mb=args.max_workspace_mb, upload_idle_s=args.upload_idle_s,
                 models=tuple(args.models), heartbeat_s=args.heartbeat_s)


def add_batch(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run many generate jobs from a JSON-lines manifest (resumable; locally or on Ray)",
        description="Run every job of MANIFEST (JSON lines: one object a line with the fields of the service's "
        "generate request: input, any generation parameter, optional output_dir relative to --out). Each job "
        "gets its own folder with a done-marker; a re-run skips complete jobs. Failed jobs are listed with "
        "their error codes in OUT/summary.json and do not stop the batch. Exit code 0 when no job failed.",
    )
    p.add_argument("manifest", help="the JSON-lines manifest (relative inputs are read from its folder)")
    p.add_argument("--out", required=True, help="the batch's output folder (created if missing)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray actors (needs `pip install .[ray]`): a new local cluster, or the cluster at "
                   "ADDRESS (e.g. auto, ray://head:10001); --out must be visible to every node")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="--ray: how many actors (default: one per GPU, else one per CPU)")
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args) -> int:
    from backend.batch import main as batch_main

    return batch_main(args)
