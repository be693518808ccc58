"""Errors the backend reports to people: each has a stable code, a message and a hint.

The service turns them into `error` events, the CLI prints them, and the Python API raises them.
"""

from __future__ import annotations

import errno
import os
import shutil


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


class OutputError(TextureVariantsError):
    """The results cannot be written where asked (disk full, read-only, no permission, bad path)."""

    code = "bad_output"


class NoSpaceError(OutputError):
    """The disk (or the remote workspace's budget) has no room for the results."""

    code = "no_space"


class BadModelError(TextureVariantsError):
    """A model's files are on this machine but cannot be read (truncated, corrupt, not a checkpoint)."""

    code = "bad_model"


OUTPUT_HINT = "free disk space or choose another output folder"

# The one table from a low-level cause to what people are told: errno -> what happened. Every one of
# these becomes `bad_output` with OUTPUT_HINT (those in NO_SPACE_ERRNOS `no_space`, with the disk's
# free and total space); anything else unexpected is `engine_failed`.
OUTPUT_ERRNOS = {
    errno.ENOSPC: "no space left on the disk",
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk quota is used up",
    errno.EFBIG: "the file is larger than this file system or process allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "a folder is in the way",
    errno.EEXIST: "a file is in the way",
}
NO_SPACE_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def classify(exc: BaseException, *, engine: str | None = None) -> TextureVariantsError:
    """Map any failure of a job to a TextureVariantsError with the right code and hint.

    `engine` is the engine that ran (None: unknown), so that the hint never suggests the engine
    that just failed.
    """
    if isinstance(exc, TextureVariantsError):
        return exc
    if isinstance(exc, UnicodeEncodeError):  # a path this file system cannot spell
        return OutputError(f"cannot write the results: a path cannot be encoded for this file system ({exc})",
                           hint=OUTPUT_HINT)
    if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno in NO_SPACE_ERRNOS:
            return NoSpaceError(f"cannot write{where}: {OUTPUT_ERRNOS[exc.errno]} ({exc.strerror or exc})"
                                f"{disk_space(exc.filename)}", hint=OUTPUT_HINT)
        return OutputError(f"cannot write{where}: {OUTPUT_ERRNOS[exc.errno]} ({exc.strerror or exc})",
                           hint=OUTPUT_HINT)
    hint = "see the backend log for the traceback; try smaller settings"
    if engine != "patch":
        hint += " or the patch engine"
    return TextureVariantsError(f"generation failed: {type(exc).__name__}: {exc}", hint=hint, code="engine_failed")


def disk_space(path) -> str:
    """'; N MB free of M MB on that disk now' for the file system holding `path` (or its nearest existing
    folder); the file that failed is removed already, so N may be more than the write found."""
    folder = os.fsdecode(path) if path else ""
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    if not folder:
        return ""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return ""
    return f"; {usage.free / 2**20:.1f} MB free of {usage.total / 2**20:.1f} MB on that disk now"
