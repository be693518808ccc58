"""Parsing a request line and checking each request type's fields (docs/PROTOCOL.md, "Requests").

Every field is checked here (a job request's in backend.service.job_request_checks), so a bad request
is refused with `bad_request` (or the code its check names) before the service acts on it;
`parse_request` is the one entry point for a line.
"""

from __future__ import annotations

import json
import os

from backend.service.job_request_checks import JOB_CHECKS
from backend.service.protocol import (
    CHUNK_BYTES,
    MAX_ID_CHARS,
    MAX_LINE_BYTES,
    MAX_UPLOAD_BYTES,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    ProtocolError,
    Request,
    bad,
    only,
    short,
    valid_id,
)


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
    if not valid_id(request_id):
        raise ProtocolError("bad_request", f"request has a missing or invalid 'id': {short(request_id)}",
                            f"give every request a non-empty string or integer 'id' (at most {MAX_ID_CHARS} characters)")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_request", f"request has a missing or invalid 'type': {short(kind)}",
                            f"'type' is one of: {', '.join(REQUEST_TYPES)}", request_id)
    if kind not in REQUEST_TYPES:
        raise ProtocolError("unknown_type", f"unknown request type {short(kind)}",
                            f"'type' is one of: {', '.join(REQUEST_TYPES)} (protocol {PROTOCOL_VERSION})",
                            request_id)
    fields = {k: v for k, v in obj.items() if k not in ("id", "type")}
    fields = _CHECKS[kind](fields, request_id)
    return Request(request_id, kind, fields)


def _check_hello(fields: dict, request_id) -> dict:
    only(fields, ("protocol", "client", "probe"), "hello", request_id)
    probe = fields.get("probe")
    if probe is not None and not (isinstance(probe, dict) and set(probe) == {"path", "token"}
                                  and all(isinstance(v, str) and 0 < len(v) <= 4096 for v in probe.values())):
        bad(request_id, f"hello 'probe' must be {{\"path\": ..., \"token\": ...}} strings, got {short(probe)}",
             "write a short random token to a file and send its absolute path and the token")
    protocol = fields.get("protocol")
    if protocol is not None and (not isinstance(protocol, int) or isinstance(protocol, bool)):
        bad(request_id, f"hello 'protocol' must be an integer, got {short(protocol)}",
             f"send the protocol version your client speaks ({PROTOCOL_VERSION} for this backend)")
    if protocol is not None and protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol_mismatch",
            f"client speaks protocol {protocol}, this backend speaks protocol {PROTOCOL_VERSION}",
            "update the Blender extension and the backend to the same release "
            "(re-run 'Set up backend' in the add-on preferences)", request_id)
    if "client" in fields and not isinstance(fields["client"], str):
        bad(request_id, "hello 'client' must be a string", "describe the client, e.g. 'blender 4.5'")
    return fields


def _check_cancel(fields: dict, request_id) -> dict:
    only(fields, ("job",), "cancel", request_id)
    if not valid_id(fields.get("job")):
        bad(request_id, f"cancel needs 'job': the id of a generate request, got {short(fields.get('job'))}",
             'send {"id": ..., "type": "cancel", "job": "<id of the generate request>"}')
    return fields


def _check_no_fields(kind: str):
    def check(fields: dict, request_id) -> dict:
        only(fields, (), kind, request_id)
        return fields

    return check


def _int_field(fields: dict, name: str, kind: str, low: int, high: int, request_id) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        bad(request_id, f"{kind} '{name}' must be an integer from {low} to {high}, got {short(value)}",
             "see docs/PROTOCOL.md, 'Transfers'")
    return value


def _check_upload_begin(fields: dict, request_id) -> dict:
    only(fields, ("name", "size", "sha256"), "upload_begin", request_id)
    _int_field(fields, "size", "upload_begin", 0, MAX_UPLOAD_BYTES, request_id)
    name, digest = fields.get("name"), fields.get("sha256")
    if not isinstance(name, str) or not 0 < len(name) <= 4096 or "\0" in name:
        bad(request_id, f"upload_begin needs 'name': the client's path of the file, got {short(name)}",
             "send the path the file has on the client (it labels the results)")
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        bad(request_id, f"upload_begin 'sha256' must be 64 lowercase hex digits, got {short(digest)}",
             "send hashlib.sha256(data).hexdigest() of the whole file")
    return fields


def _check_upload_id(fields: dict, kind: str, request_id):
    if not valid_id(fields.get("upload")):
        bad(request_id, f"{kind} needs 'upload': the id of the upload_begin request, got {short(fields.get('upload'))}",
             "name the upload by the id of its upload_begin request")


def _check_upload_chunk(fields: dict, request_id) -> dict:
    _check_upload_id(fields, "upload_chunk", request_id)
    try:
        only(fields, ("upload", "offset", "data"), "upload_chunk", request_id)
        _int_field(fields, "offset", "upload_chunk", 0, MAX_UPLOAD_BYTES, request_id)
        data = fields.get("data")
        if not isinstance(data, str) or len(data) > 4 * -(-CHUNK_BYTES // 3):
            bad(request_id, f"upload_chunk 'data' must be base64 of at most {CHUNK_BYTES} bytes",
                 "split the file into chunks of at most 256 KiB; start the upload again")
    except ProtocolError as e:  # the upload it names is closed: no later chunk may fill the gap
        e.upload = fields["upload"]
        raise
    return fields


def _check_upload_end(fields: dict, request_id) -> dict:
    only(fields, ("upload",), "upload_end", request_id)
    _check_upload_id(fields, "upload_end", request_id)
    return fields


def _workspace_path(fields: dict, kind: str, allowed: tuple[str, ...], request_id, hint: str) -> str:
    """The request's 'path' (a file or folder of the service's workspace), checked to be absolute."""
    only(fields, allowed, kind, request_id)
    path = fields.get("path")
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        bad(request_id, f"{kind} needs 'path': an absolute path, got {short(path)}", hint)
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


_CHECKS = {
    "hello": _check_hello,
    "cancel": _check_cancel,
    "status": _check_no_fields("status"),
    "unload": _check_no_fields("unload"),
    "shutdown": _check_no_fields("shutdown"),
    "upload_begin": _check_upload_begin,
    "upload_chunk": _check_upload_chunk,
    "upload_end": _check_upload_end,
    "download": _check_download,
    "release": _check_release,
    **JOB_CHECKS,
}
assert set(_CHECKS) == set(REQUEST_TYPES)


