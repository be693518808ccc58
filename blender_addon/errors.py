"""Errors the add-on reports to people: what went wrong and what to do about it.

Plain Python (no bpy). Operators catch `UserError`, report `str(error)` and leave the material as it
was; backend errors arrive as `{"code", "message", "hint"}` and get a hint here when the backend
gave none.
"""

from __future__ import annotations

from collections.abc import Mapping

# What to do when the backend did not say (it usually does); keyed by the backend's error codes.
DEFAULT_HINTS = {
    "not_set_up": "click Set up backend in Edit > Preferences > Add-ons > Texture Variants, "
    "or point Backend Python (or TEXTURE_VARIANTS_PYTHON) at a Python with the backend installed",
    "backend_died": "the backend process stopped; see the system console for its log, then try again "
    "(Set up backend again if it keeps happening)",
    "protocol_mismatch": "the backend is from another version of the add-on: click Set up backend again",
    "models_missing": "set Base model and IP-Adapter in the add-on preferences (a local folder or a hub id "
    "already downloaded), or pick the patch engine, which needs no models",
    "cancelled": "click Generate Variant to start again",
    "bad_input": "check the image texture and the settings in the Variants panel",
}


class UserError(Exception):
    """A problem the user can fix; `code` is stable so scripts can match on it."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint or DEFAULT_HINTS.get(code, "")

    def __str__(self) -> str:
        return f"{self.message}. To fix: {self.hint}" if self.hint else self.message

    @classmethod
    def from_event(cls, error: Mapping) -> UserError:
        """From a backend `error` event (or a job's error record)."""
        return cls(error.get("code", "internal"), str(error.get("message", "the backend failed")).rstrip("."),
                   error.get("hint", ""))

    @classmethod
    def from_exception(cls, exc: BaseException) -> UserError:
        """From `backend_client.BackendError` (code/message/hint) or anything else."""
        if isinstance(exc, UserError):
            return exc
        code = getattr(exc, "code", "internal")
        message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
        return cls(code, str(message).rstrip("."), getattr(exc, "hint", ""))


def cancelled() -> UserError:
    return UserError("cancelled", "Generation cancelled; the material was not changed")
