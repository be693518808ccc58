"""The service protocol: JSON lines in (requests), JSON lines out (events). Documented in docs/PROTOCOL.md.

This module defines the envelope: the request and event types with the fields each request takes,
the limits, the error a refused request raises and how events are built; parsing a line and checking
its fields is backend.service.request_checks. Neither touches stdin/stdout or the engines, so the
service, the tests and the documentation check share one definition of every request and event.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.params import MASK_MODES, RESTYLE_STARTS, GenerationParams, capabilities

PROTOCOL_VERSION = 2
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; a megabyte is a runaway client
MAX_EVENT_BYTES = MAX_LINE_BYTES  # events obey the same limit: encode() shortens long strings to fit
MAX_ID_CHARS = 200
CHUNK_BYTES = 256 << 10  # the most one upload_chunk or chunk event carries (before base64)
MAX_UPLOAD_BYTES = 1 << 30
# Options that only the person starting the service may set (`serve --allow-pickle`), never a request.
START_OPTIONS = {"allow_pickle": "--allow-pickle"}

# The fields of each request type are checked by backend.service.request_checks (a function per type).
REQUEST_TYPES = ("hello", "generate", "restyle", "upscale", "make_tileable", "tileset", "tileset_layout", "cancel",
                 "status", "unload",
                 "shutdown", "upload_begin", "upload_chunk", "upload_end", "download", "release")
EVENT_TYPES = (
    # answers to hello / status / cancel / unload / shutdown
    "hello", "status", "ack",
    # the life of a generate (or restyle, upscale, make_tileable, tileset, tileset_layout) job
    "accepted", "progress", "result", "cancelled",
    # a file leaving the service (download)
    "chunk",
    # anything that went wrong, for any request (or for a line that was not a request)
    "error",
    # the service is alive and the link to it works (every `serve --heartbeat-s` seconds; id null)
    "heartbeat",
)

# generate: where, then the parameters of the Python API (backend.generate_variants), then the
# service's own options.
API_FIELDS = GenerationParams.field_names() + ("base", "ip_adapter")
GENERATE_FIELDS = ("input", "output_dir", *API_FIELDS, "tiled_preview", "preview_every", "maps_only", "extra")
DEFAULT_PREVIEW_EVERY = 5


def generate_parameters() -> dict:
    """What a generate request accepts, for `hello`: its fields, the values of the choice fields,
    and the options each engine takes in `extra` (all read from backend.params, less the start options)."""
    caps = capabilities()
    caps["extra"] = {engine: [o for o in options if o not in START_OPTIONS] for engine, options in caps["extra"].items()}
    return {"fields": list(GENERATE_FIELDS), **caps}


class ProtocolError(Exception):
    """A request the service cannot act on; becomes an `error` event answering `request_id`."""

    upload = None  # a refused upload_chunk: the id of the upload it closes (every bad chunk closes its upload)

    def __init__(self, code: str, message: str, hint: str, request_id=None):
        super().__init__(message)
        self.code, self.message, self.hint, self.request_id = code, message, hint, request_id

    def event(self) -> dict:
        return error_event(self.request_id, self.code, self.message, self.hint)


@dataclass(frozen=True)
class Request:
    id: str | int
    type: str
    fields: dict


def valid_id(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# upscale: a generate-like job whose result is the input enlarged (backend/upscaling.py).
UPSCALE_FIELDS = ("input", "output_dir", "factor", "maps", "engine", "seed", "steps", "tile", "strength", "window",
                  "base", "ip_adapter", "tiled_preview", "preview_every")


# ---------------------------------------------------------------- restyle

# restyle: a generate job for the diffusion engine with appearance "none" and the restyle options
# (backend.params.DiffusionOptions, restyle section) at the top level, named as in the Python API.
RESTYLE_OPTIONS = ("restyle_prompt", "restyle_strength", "restyle_start", "mask", "mask_points", "mask_box", "mask_mode", "sam")
RESTYLE_FIELDS = ("input", "output_dir", *RESTYLE_OPTIONS, "variants", "seed", "steps", "sampler", "fast_steps",
                  "size", "tile",
                  "negative_prompt", "guidance_scale", "base", "ip_adapter", "tiled_preview", "preview_every", "extra",
                  "maps", "map_size")


def restyle_parameters() -> dict:
    """What a restyle request accepts, for `hello`."""
    return {"fields": list(RESTYLE_FIELDS),
            "choices": {"mask_mode": list(MASK_MODES), "restyle_start": list(RESTYLE_STARTS)}}


# make_tileable: the input itself made tileable at its own size (backend.api.make_tileable); a job
# like generate's (accepted, result, cancel), its options at the top level.
TILEABLE_FIELDS = ("input", "output_dir", "engine", "band", "flatten", "tile", "maps", "seed", "steps", "base",
                   "ip_adapter")


def tileable_parameters() -> dict:
    """What a make_tileable request accepts, for `hello`."""
    from backend.tileable import FLATTENS, TILES

    return {"fields": list(TILEABLE_FIELDS),
            "choices": {"engine": ["auto", "patch", "diffusion"], "flatten": list(FLATTENS), "tile": list(TILES)}}


# tileset: a Wang tile set of the input (backend.api.make_tileset); tileset_layout: N x M cells of a
# saved set laid out (backend.api.tileset_layout). Jobs like generate's, their options at the top level.
TILESET_FIELDS = ("input", "output_dir", "colours", "size", "padding", "engine", "maps", "seed", "steps", "base",
                  "ip_adapter")
TILESET_LAYOUT_FIELDS = ("input", "output_dir", "cells", "seed")


def tileset_parameters() -> dict:
    """What tileset and tileset_layout requests accept, for `hello`."""
    from backend.tileset.atlas import COLOURS
    from backend.tileset.make import ENGINES

    return {"tileset": {"fields": list(TILESET_FIELDS), "choices": {"colours": list(COLOURS), "engine": list(ENGINES)}},
            "tileset_layout": {"fields": list(TILESET_LAYOUT_FIELDS)}}


def bad(request_id, message: str, hint: str):
    raise ProtocolError("bad_request", message, hint, request_id)


def only(fields: dict, allowed: tuple[str, ...], kind: str, request_id):
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        bad(request_id, f"{kind} request has unknown field(s): {', '.join(map(short, unknown))}",
             f"{kind} accepts: {', '.join(allowed) or 'no fields besides id and type'} (see docs/PROTOCOL.md)")


def event(kind: str, request_id, **fields) -> dict:
    """An event dict; every event names its type and the id of the request it answers (or null)."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"undocumented event type {kind!r}")
    return {"type": kind, "id": request_id, **fields}


def error_event(request_id, code: str, message: str, hint: str = "", **fields) -> dict:
    return event("error", request_id, code=code, message=message, hint=hint, **fields)
