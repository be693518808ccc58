"""Errors the backend reports to people: each has a stable code, a message and a hint.

The service turns them into `error` events, the CLI prints them, and the Python API raises them.
"""

from __future__ import annotations


class TextureVariantsError(Exception):
    """Base class: `code` is stable (scripts match on it), `hint` says what to do."""

    code = "internal"

    def __init__(self, message: str, hint: str = "", *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class InputError(TextureVariantsError):
    """The reference image or a parameter is unusable."""

    code = "bad_input"


class ModelsMissingError(TextureVariantsError):
    """A model is not on this machine (and we never download without being asked)."""

    code = "models_missing"


class CancelledError(TextureVariantsError):
    """The caller's cancel event was set; raised within one denoising step."""

    code = "cancelled"

    def __init__(self, message: str = "generation cancelled", hint: str = ""):
        super().__init__(message, hint)
