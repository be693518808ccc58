"""The add-on's one error class: what went wrong (`code`, `message`) and what to do about it (`hint`).

Plain Python (no bpy). The client raises it, operators report `str(error)` and leave the material
as it was (see `reports_errors`), and the backend's `error` events map onto it with `from_event`;
a hint is filled in here when the backend or the client gave none.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

# What to do when the backend did not say (it usually does); keyed by the backend's error codes.
PREFERENCES = "Edit > Preferences > Add-ons > Texture Variants"
DEFAULT_HINTS = {
    "not_set_up": f"click Set up backend in {PREFERENCES}, or point Backend Python there at a Python with "
    "the backend installed",
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
        """The error itself, or an unexpected exception as an `internal` error."""
        if isinstance(exc, UserError):
            return exc
        return cls("internal", (str(exc) or exc.__class__.__name__).rstrip("."))

    def event(self, request_id=None) -> dict:
        """As a backend `error` event, for code that folds events (a job that could not be sent)."""
        return {"type": "error", "id": request_id, "code": self.code, "message": self.message, "hint": self.hint}


# The models of the controls, by a word the backend's message holds: (the preference that sets it,
# what else helps). Download fetches each one's default into the Hugging Face cache.
CONTROL_MODELS = (
    ("step-distillation lora", "Fast Sampling LoRA", "or set Quality to Full"),
    ("segment anything", "Segment Anything Model", "or paint a mask (Mask: Painted Mask) instead"),
    ("controlnet", "ControlNet Model", "or set Guide Mode to LGP"),
    ("lgp", "LGP Model", "or set Guide Mode to ControlNet, or clear the Structure Guide"),
)


def in_blender_terms(error: UserError) -> UserError:
    """The backend's error with a hint that names the add-on's preferences instead of command-line flags."""
    if error.code != "models_missing":
        return error
    text = error.message.lower()
    for word, field, otherwise in CONTROL_MODELS:
        if word in text:
            return UserError(error.code, error.message, f"set {field} in {PREFERENCES} (a local file or folder, or "
                             f"a hub id already downloaded) or click Download beside it, {otherwise}")
    if "content" in text or "text encoder" in text:
        hint = (f"set Content Encoder in {PREFERENCES} to a CLIP ViT-H/14 text model folder (config.json, "
                "model.safetensors, tokenizer), or clear Subject to Drop in the Variants panel")
    else:
        hint = (f"set Base Model and IP-Adapter in {PREFERENCES} (a local folder, or a hub id already "
                "downloaded), or pick the patch engine, which needs no models")
    return UserError(error.code, error.message, hint)


def cancelled() -> UserError:
    return UserError("cancelled", "Generation cancelled; the material was not changed")


def reports_errors(on_error=None):
    """Decorates an operator's execute/invoke: a UserError is reported and the operator cancelled.

    `on_error(operator, context, error)`, if given, runs first (e.g. to show the error in a status
    line). Anything else propagates: it is a bug, and Blender shows its traceback.
    """

    def run(operator, context, call):
        try:
            return call()
        except UserError as error:
            if on_error is not None:
                on_error(operator, context, error)
            operator.report({"ERROR"}, str(error))
            return {"CANCELLED"}

    # Blender checks the argument count of execute (self, context) and invoke (self, context, event).
    def decorate(method):
        if method.__name__ == "invoke":
            def wrapper(self, context, event):
                return run(self, context, lambda: method(self, context, event))
        else:
            def wrapper(self, context):
                return run(self, context, lambda: method(self, context))
        return functools.wraps(method)(wrapper)

    return decorate
