"""The service protocol: JSON lines in (requests), JSON lines out (events). Documented in docs/PROTOCOL.md.

This module only parses and builds messages; it never touches stdin/stdout or the engines, so the
service, the tests and the documentation check share one definition of every request and event.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from backend.errors import InputError
from backend.params import MASK_MODES, RESTYLE_STARTS, UPSCALE_FACTORS, GenerationParams, capabilities

PROTOCOL_VERSION = 2
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; a megabyte is a runaway client
MAX_EVENT_BYTES = MAX_LINE_BYTES  # events obey the same limit: encode() shortens long strings to fit
MAX_ID_CHARS = 200
CHUNK_BYTES = 256 << 10  # the most one upload_chunk or chunk event carries (before base64)
MAX_UPLOAD_BYTES = 1 << 30
# Options that only the person starting the service may set (`serve --allow-pickle`), never a request.
START_OPTIONS = {"allow_pickle": "--allow-pickle"}

# The fields of each request type are checked by the _check_* functions below (one per type).
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


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_request(line: bytes) -> Request:
    """Decode one line into a Request; raise ProtocolError naming the problem (with the id when known)."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError("line_too_long", f"request line is {len(line)} bytes, the limit is {MAX_LINE_BYTES}",
                            "send one small JSON object per line; images travel as file paths")
    try:
        text = line.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError("bad_json", f"line is not valid JSON: {e}"[:500],
                            "send one JSON object per line, UTF-8 encoded") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", f"request must be a JSON object, got {type(obj).__name__}",
                            'send an object like {"id": "1", "type": "hello"}')
    request_id = obj.get("id")
    if not _valid_id(request_id):
        raise ProtocolError("bad_request", f"request has a missing or invalid 'id': {_short(request_id)}",
                            f"give every request a non-empty string or integer 'id' (at most {MAX_ID_CHARS} characters)")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_request", f"request has a missing or invalid 'type': {_short(kind)}",
                            f"'type' is one of: {', '.join(REQUEST_TYPES)}", request_id)
    if kind not in REQUEST_TYPES:
        raise ProtocolError("unknown_type", f"unknown request type {_short(kind)}",
                            f"'type' is one of: {', '.join(REQUEST_TYPES)} (protocol {PROTOCOL_VERSION})",
                            request_id)
    fields = {k: v for k, v in obj.items() if k not in ("id", "type")}
    fields = _CHECKS[kind](fields, request_id)
    return Request(request_id, kind, fields)


def _valid_id(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(request_id, message: str, hint: str):
    raise ProtocolError("bad_request", message, hint, request_id)


def _only(fields: dict, allowed: tuple[str, ...], kind: str, request_id):
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        _bad(request_id, f"{kind} request has unknown field(s): {', '.join(map(_short, unknown))}",
             f"{kind} accepts: {', '.join(allowed) or 'no fields besides id and type'} (see docs/PROTOCOL.md)")


def _check_hello(fields: dict, request_id) -> dict:
    _only(fields, ("protocol", "client", "probe"), "hello", request_id)
    probe = fields.get("probe")
    if probe is not None and not (isinstance(probe, dict) and set(probe) == {"path", "token"}
                                  and all(isinstance(v, str) and 0 < len(v) <= 4096 for v in probe.values())):
        _bad(request_id, f"hello 'probe' must be {{\"path\": ..., \"token\": ...}} strings, got {_short(probe)}",
             "write a short random token to a file and send its absolute path and the token")
    protocol = fields.get("protocol")
    if protocol is not None and (not isinstance(protocol, int) or isinstance(protocol, bool)):
        _bad(request_id, f"hello 'protocol' must be an integer, got {_short(protocol)}",
             f"send the protocol version your client speaks ({PROTOCOL_VERSION} for this backend)")
    if protocol is not None and protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol_mismatch",
            f"client speaks protocol {protocol}, this backend speaks protocol {PROTOCOL_VERSION}",
            "update the Blender extension and the backend to the same release "
            "(re-run 'Set up backend' in the add-on preferences)", request_id)
    if "client" in fields and not isinstance(fields["client"], str):
        _bad(request_id, "hello 'client' must be a string", "describe the client, e.g. 'blender 4.5'")
    return fields


def _check_cancel(fields: dict, request_id) -> dict:
    _only(fields, ("job",), "cancel", request_id)
    if not _valid_id(fields.get("job")):
        _bad(request_id, f"cancel needs 'job': the id of a generate request, got {_short(fields.get('job'))}",
             'send {"id": ..., "type": "cancel", "job": "<id of the generate request>"}')
    return fields


def _check_no_fields(kind: str):
    def check(fields: dict, request_id) -> dict:
        _only(fields, (), kind, request_id)
        return fields

    return check


def _check_path(fields: dict, name: str, request_id) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value or "\0" in value:
        _bad(request_id, f"generate needs '{name}': a path string, got {_short(value)}",
             f"pass '{name}' as an absolute path")
    if not os.path.isabs(value):
        _bad(request_id, f"generate '{name}' must be an absolute path, got {_short(value)}",
             "the service's working folder is not yours: resolve the path before sending it")
    return value


def _check_generate(fields: dict, request_id) -> dict:
    """Check every generate field here, so a bad request is refused before it is queued."""
    _only(fields, GENERATE_FIELDS, "generate", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    api = {k: fields[k] for k in GenerationParams.field_names() if k in fields}
    if api.get("sketch"):  # "" = no sketch
        api["sketch"] = _check_path(fields, "sketch", request_id)
    for name in ("variants", "steps", "size"):  # JSON has one number type: accept 4.0 as 4
        if name in api:
            api[name] = _whole(api[name])
    out |= _models(fields, request_id)
    tiled_preview = fields.get("tiled_preview", False)
    if not isinstance(tiled_preview, bool):
        _bad(request_id, f"generate 'tiled_preview' must be true or false, got {_short(tiled_preview)}",
             "set tiled_preview to true to also write a 3x3 tiled image of each variant")
    out["tiled_preview"] = tiled_preview
    every = fields.get("preview_every", DEFAULT_PREVIEW_EVERY)
    if not isinstance(every, int) or isinstance(every, bool) or not 0 <= every <= 1000:
        _bad(request_id, f"generate 'preview_every' must be an integer from 0 to 1000, got {_short(every)}",
             "0 writes no previews; n writes one every n steps")
    out["preview_every"] = every
    extra = fields.get("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) and k.isidentifier() for k in extra):
        _bad(request_id, f"generate 'extra' must be an object of engine options, got {_short(extra)}",
             "pass engine-specific options as {\"extra\": {\"name\": value}}")
    for name in sorted(set(extra) & set(START_OPTIONS)):
        _bad(request_id, f"generate 'extra' may not set {name}: it is a start option of the service",
             f"whoever starts the backend decides: `python -m backend serve {START_OPTIONS[name]}`")
    try:
        out["params"] = GenerationParams.build(extra, **api)
    except InputError as e:
        raise ProtocolError("bad_request", f"generate: {e.message}", e.hint, request_id) from None
    for name, path in out["params"].maps.items():
        _check_map_file(name, path, request_id)
    out["maps_only"] = fields.get("maps_only", False)
    if out["maps_only"] is not False and (out["maps_only"] is not True or not out["params"].derive
                                          or out["params"].maps):
        _bad(request_id, f"generate 'maps_only' must be true with a 'derive' list and no 'maps', or false; got "
             f"{_short(out['maps_only'])} with derive {list(out['params'].derive)}",
             'for the input\'s own maps send "maps_only": true, "derive": ["height", "normal", "roughness"]')
    return out


def _models(fields: dict, request_id) -> dict:
    """`base` and `ip_adapter`: a non-empty string or null (messages name generate; see _renamed)."""
    out = {}
    for name in ("base", "ip_adapter"):
        value = fields.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            _bad(request_id, f"generate '{name}' must be a non-empty string or null, got {_short(value)}",
                 "pass a hub id, a model folder or a checkpoint file, or leave it out for the service default")
        out[name] = value
    return out


def _maps(fields: dict, kind: str, request_id) -> dict:
    """A request's `maps`: {name: absolute path}."""
    maps = fields.get("maps", {})
    if not isinstance(maps, dict) or not all(isinstance(v, str) for v in maps.values()):
        _bad(request_id, f"{kind} 'maps' must be an object of name: path, got {_short(maps)}",
             '{"maps": {"roughness": "/abs/rough.png"}}')
    for name, path in maps.items():
        _check_map_file(name, path, request_id)
    return dict(maps)


def _whole(value):
    """4.0 as 4, also inside a [w, h] pair; anything else as it is (the parameter's check judges it)."""
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


# upscale: a generate-like job whose result is the input enlarged (backend/upscaling.py).
UPSCALE_FIELDS = ("input", "output_dir", "factor", "maps", "engine", "seed", "steps", "tile", "strength", "window",
                  "base", "ip_adapter", "tiled_preview", "preview_every")


def _check_upscale(fields: dict, request_id) -> dict:
    _only(fields, UPSCALE_FIELDS, "upscale", request_id)
    if fields.get("factor") not in UPSCALE_FACTORS or isinstance(fields.get("factor"), bool):  # True == 1
        _bad(request_id, f"upscale needs 'factor': 2 or 4, got {_short(fields.get('factor'))}", '"factor": 2 or 4')
    extra = {name: fields[key] for key, name in (("strength", "upscale_strength"), ("window", "window")) if key in fields}
    try:  # strength and window are the diffusion options upscale_strength and window
        return _check_generate({k: v for k, v in fields.items() if k not in ("factor", "strength", "window")}
                               | {"extra": extra}, request_id) | {"upscale": fields["factor"]}
    except ProtocolError as e:  # the checks are generate's: name the request that was sent
        e.message = "upscale" + e.message.removeprefix("generate")
        raise


def _int_field(fields: dict, name: str, kind: str, low: int, high: int, request_id) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        _bad(request_id, f"{kind} '{name}' must be an integer from {low} to {high}, got {_short(value)}",
             "see docs/PROTOCOL.md, 'Transfers'")
    return value


def _check_upload_begin(fields: dict, request_id) -> dict:
    _only(fields, ("name", "size", "sha256"), "upload_begin", request_id)
    _int_field(fields, "size", "upload_begin", 0, MAX_UPLOAD_BYTES, request_id)
    name, digest = fields.get("name"), fields.get("sha256")
    if not isinstance(name, str) or not 0 < len(name) <= 4096 or "\0" in name:
        _bad(request_id, f"upload_begin needs 'name': the client's path of the file, got {_short(name)}",
             "send the path the file has on the client (it labels the results)")
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        _bad(request_id, f"upload_begin 'sha256' must be 64 lowercase hex digits, got {_short(digest)}",
             "send hashlib.sha256(data).hexdigest() of the whole file")
    return fields


def _check_upload_id(fields: dict, kind: str, request_id):
    if not _valid_id(fields.get("upload")):
        _bad(request_id, f"{kind} needs 'upload': the id of the upload_begin request, got {_short(fields.get('upload'))}",
             "name the upload by the id of its upload_begin request")


def _check_upload_chunk(fields: dict, request_id) -> dict:
    _only(fields, ("upload", "offset", "data"), "upload_chunk", request_id)
    _check_upload_id(fields, "upload_chunk", request_id)
    _int_field(fields, "offset", "upload_chunk", 0, MAX_UPLOAD_BYTES, request_id)
    data = fields.get("data")
    if not isinstance(data, str) or len(data) > 4 * -(-CHUNK_BYTES // 3):
        _bad(request_id, f"upload_chunk 'data' must be base64 of at most {CHUNK_BYTES} bytes",
             "split the file into chunks of at most 256 KiB")
    return fields


def _check_upload_end(fields: dict, request_id) -> dict:
    _only(fields, ("upload",), "upload_end", request_id)
    _check_upload_id(fields, "upload_end", request_id)
    return fields


def _workspace_path(fields: dict, kind: str, allowed: tuple[str, ...], request_id, hint: str) -> str:
    """The request's 'path' (a file or folder of the service's workspace), checked to be absolute."""
    _only(fields, allowed, kind, request_id)
    path = fields.get("path")
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        _bad(request_id, f"{kind} needs 'path': an absolute path, got {_short(path)}", hint)
    return path


def _check_download(fields: dict, request_id) -> dict:
    path = _workspace_path(fields, "download", ("path", "chunk_bytes"), request_id,
                           "download the files a result event names")
    if "chunk_bytes" in fields:
        _int_field(fields, "chunk_bytes", "download", 1, CHUNK_BYTES, request_id)
    return {"path": path, "chunk_bytes": fields.get("chunk_bytes", CHUNK_BYTES)}


def _check_release(fields: dict, request_id) -> dict:
    return {"path": _workspace_path(fields, "release", ("path",), request_id, "release a job folder (the "
                                    "output_dir of a finished job) or a file upload_end named")}


def _check_map_file(name: str, path: str, request_id) -> None:
    """A map's path is checked like 'input' (absolute); whether it exists is `check_map_files`' (after
    the service's confinement check: a path it may not read gets no answer about its existence)."""
    _check_path({"maps." + name: path}, "maps." + name, request_id)


def check_map_files(maps: dict, request_id) -> None:
    """Every map names a regular file now, else `bad_request`."""
    for name, path in maps.items():
        _check_existing_map(name, path, request_id)


def _check_existing_map(name: str, path: str, request_id) -> None:
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "not an existing regular file"
        _bad(request_id, f"generate 'maps.{name}' is {what}: {_short(path)}",
             "pass the absolute path of the map's image file (PNG or TIFF)")
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
TILEABLE_FIELDS = ("input", "output_dir", "engine", "band", "flatten", "tile", "maps")


def tileable_parameters() -> dict:
    """What a make_tileable request accepts, for `hello`."""
    from backend.tileable import FLATTENS, TILES

    return {"fields": list(TILEABLE_FIELDS),
            "choices": {"engine": ["auto", "patch"], "flatten": list(FLATTENS), "tile": list(TILES)}}


def _check_make_tileable(fields: dict, request_id) -> dict:
    from backend.tileable import FLATTENS, TILES

    _only(fields, TILEABLE_FIELDS, "make_tileable", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    for name, allowed, default in (("engine", ("auto", "patch"), "auto"), ("flatten", FLATTENS, "auto"),
                                   ("tile", TILES, "both")):
        value = fields.get(name, default)
        if value not in allowed:
            _bad(request_id, f"make_tileable '{name}' must be one of {', '.join(allowed)}, got {_short(value)}",
                 f'e.g. "{name}": "{default}"')
        out[name] = value
    band = fields.get("band")
    if band is not None and (not isinstance(band, int) or isinstance(band, bool) or not 8 <= band <= 4096):
        _bad(request_id, f"make_tileable 'band' must be an integer from 8 to 4096 (pixels) or null, got "
             f"{_short(band)}", "leave it out to let the texture's scale decide")
    out["band"] = band
    out["maps"] = _maps(fields, "make_tileable", request_id)
    return out


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


def _check_tileset(fields: dict, request_id) -> dict:
    from backend.tileset.atlas import COLOURS
    from backend.tileset.make import DEFAULT_PADDING, ENGINES

    _only(fields, TILESET_FIELDS, "tileset", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    colours, engine = _whole(fields.get("colours", 2)), fields.get("engine", "auto")
    if colours not in COLOURS or isinstance(colours, bool):
        _bad(request_id, f"tileset 'colours' must be 2 or 3, got {_short(colours)}", '"colours": 2 (16 tiles)')
    if engine not in ENGINES:
        _bad(request_id, f"tileset 'engine' must be one of {', '.join(ENGINES)}, got {_short(engine)}",
             '"engine": "auto"')
    size, padding, seed = (_whole(fields.get(k, d)) for k, d in (("size", None), ("padding", DEFAULT_PADDING),
                                                                   ("seed", 0)))
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 4096
                             or size % 8):
        _bad(request_id, f"tileset 'size' must be a multiple of 8 from 16 to 4096 (px) or null, got {_short(size)}",
             "leave it out for half the texture's shorter side")
    if not isinstance(padding, int) or isinstance(padding, bool) or not 0 <= padding <= 512:
        _bad(request_id, f"tileset 'padding' must be an integer from 0 to 512 (px), got {_short(padding)}",
             f'"padding": {DEFAULT_PADDING}')
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        _bad(request_id, f"tileset 'seed' must be a whole number >= 0, got {_short(seed)}", '"seed": 0')
    steps = _whole(fields.get("steps"))
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 200):
        _bad(request_id, f"tileset 'steps' must be an integer from 1 to 200 or null, got {_short(steps)}",
             "leave it out for the diffusion engine's default")
    return out | _models(fields, request_id) | {"colours": colours, "size": size, "padding": padding,
                                                 "engine": engine, "seed": seed, "steps": steps,
                                                 "maps": _maps(fields, "tileset", request_id)}


def _check_tileset_layout(fields: dict, request_id) -> dict:
    from backend.errors import InputError
    from backend.tileset.layout import check_seed
    from backend.tileset.make import parse_cells

    _only(fields, TILESET_LAYOUT_FIELDS, "tileset_layout", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    try:
        out["cells"] = parse_cells(fields.get("cells"))
        out["seed"] = check_seed(_whole(fields.get("seed", 0)))
    except InputError as e:
        _bad(request_id, f"tileset_layout: {e.message}", 'e.g. "cells": "8x8", "seed": 0')
    return out


def _renamed(kind: str, check):
    """A check that shares generate's checks, its messages naming the request that was sent."""
    def checked(fields: dict, request_id) -> dict:
        try:
            return check(fields, request_id)
        except ProtocolError as e:
            if e.message.startswith("generate"):
                e.message = kind + e.message.removeprefix("generate")
            raise
    return checked


def _check_restyle(fields: dict, request_id) -> dict:
    _only(fields, RESTYLE_FIELDS, "restyle", request_id)
    prompt = fields.get("restyle_prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        _bad(request_id, f"restyle needs 'restyle_prompt': the new look as text, got {_short(prompt)}",
             'e.g. "restyle_prompt": "mossy bricks"')
    extra = fields.get("extra", {})
    if isinstance(extra, dict) and set(extra) & set(RESTYLE_OPTIONS):
        _bad(request_id, f"restyle 'extra' repeats {sorted(set(extra) & set(RESTYLE_OPTIONS))}",
             "give the restyle options at the top level of the request")
    options = {name: fields[name] for name in RESTYLE_OPTIONS if name in fields}
    generate = {k: v for k, v in fields.items() if k not in RESTYLE_OPTIONS}
    generate |= {"engine": "diffusion", "appearance": "none",
                 "extra": {**extra, **options} if isinstance(extra, dict) else extra}
    try:
        if fields.get("mask") is not None:
            _check_path(fields, "mask", request_id)
        return _check_generate(generate, request_id)
    except ProtocolError as e:  # the checks are generate's: name the request that was sent
        if e.message.startswith("generate"):
            e.message = "restyle" + e.message.removeprefix("generate")
        raise


_CHECKS = {
    "hello": _check_hello,
    "generate": _check_generate,
    "restyle": _check_restyle,
    "upscale": _check_upscale,
    "make_tileable": _renamed("make_tileable", _check_make_tileable),
    "tileset": _renamed("tileset", _check_tileset),
    "tileset_layout": _renamed("tileset_layout", _check_tileset_layout),
    "cancel": _check_cancel,
    "status": _check_no_fields("status"),
    "unload": _check_no_fields("unload"),
    "shutdown": _check_no_fields("shutdown"),
    "upload_begin": _check_upload_begin,
    "upload_chunk": _check_upload_chunk,
    "upload_end": _check_upload_end,
    "download": _check_download,
    "release": _check_release,
}
assert set(_CHECKS) == set(REQUEST_TYPES)


def parse_generate(fields: dict, request_id) -> dict:
    """The checked fields of a generate request (input and output_dir absolute), as the service takes
    them; raises ProtocolError. Shared with `python -m backend batch`, whose manifest lines are these."""
    return _check_generate(fields, request_id)


def event(kind: str, request_id, **fields) -> dict:
    """An event dict; every event names its type and the id of the request it answers (or null)."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"undocumented event type {kind!r}")
    return {"type": kind, "id": request_id, **fields}


def error_event(request_id, code: str, message: str, hint: str = "", **fields) -> dict:
    return event("error", request_id, code=code, message=message, hint=hint, **fields)
