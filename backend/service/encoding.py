"""Events as lines on the wire: one line of strict JSON each, bounded in length (docs/PROTOCOL.md, "Limits")."""

from __future__ import annotations

import json
import math

from backend.service.protocol import MAX_EVENT_BYTES, error_event


def encode(ev: dict) -> bytes:
    """One line of strict JSON (ASCII, no NaN) of at most MAX_EVENT_BYTES, so any reader can split on
    newlines with a bounded buffer. A longer event has its long strings shortened (`truncated: true`)."""
    ev = _finite(ev)
    line = _dump(ev)
    for limit in (16384, 1024, 128):
        if len(line) <= MAX_EVENT_BYTES:
            return line
        line = _dump(_shorten(ev, limit) | {"truncated": True})
    if len(line) <= MAX_EVENT_BYTES:
        return line
    return _dump(error_event(ev.get("id"), "internal", f"a {ev.get('type')!r} event was too long to send",
                             "see the backend log"))


def _dump(ev: dict) -> bytes:
    return json.dumps(ev, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _shorten(value, limit: int):
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "...[truncated]"
    if isinstance(value, dict):
        return {_shorten(k, limit): _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
