"""Files crossing the protocol channel, for a client that does not share the service's file system.

The service keeps such files in its workspace: a private temporary folder (mode 0700) made on first
use and removed when the service exits. Uploads arrive in order, in base64 chunks of at most
protocol.CHUNK_BYTES, and are kept only when their size and sha256 match what `upload_begin` announced;
downloads leave the same way. Nothing here writes outside the workspace (docs/PROTOCOL.md,
"Transfers").

The workspace has a budget: finished uploads, open uploads (their announced size) and job outputs
together; an upload that does not fit, or a disk that is full (ENOSPC), is `no_space` and nothing of
it is kept. Each workspace names its owner (`owner.pid`); at start, workspaces whose owner process is
gone (a service killed with SIGKILL) are removed.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import NoSpaceError
from backend.service.protocol import CHUNK_BYTES, ProtocolError

MAX_OPEN_UPLOADS = 16
DEFAULT_BUDGET_MB = 20 * 1024  # serve --max-workspace-mb
DEFAULT_UPLOAD_IDLE_S = 600  # serve --upload-idle-s: an open upload that long without a chunk is abandoned
PREFIX = "texture-variants-"
OWNER = "owner.pid"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
MB = 1 << 20


@dataclass
class _Upload:
    part: Path
    label: str
    size: int
    sha256: str
    received: int = 0
    digest: object = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.monotonic)  # its last chunk (or its begin)


class Workspace:
    def __init__(self, budget_mb: int = DEFAULT_BUDGET_MB, upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S):
        self.budget = budget_mb * MB
        self.upload_idle_s = upload_idle_s
        self._root: Path | None = None
        self._uploads: dict = {}
        self._labels: dict[str, str] = {}  # upload path -> the client's name for it
        self._numbers = itertools.count(1)

    @property
    def root(self) -> Path:
        """The workspace folder, made on first use; OSError when it cannot be made (nothing is left)."""
        if self._root is None:
            root = Path(tempfile.mkdtemp(prefix=PREFIX)).resolve()  # 0700
            try:
                (root / OWNER).write_text(str(os.getpid()))
                (root / "uploads").mkdir()
                (root / "jobs").mkdir()
            except OSError:  # a full disk: a workspace without its owner file would never be swept
                shutil.rmtree(root, ignore_errors=True)
                raise
            self._root = root
        return self._root

    def contains(self, path: str) -> bool:
        if self._root is None:
            return False
        real = Path(os.path.realpath(path))
        return real == self._root or self._root in real.parents

    def label(self, path: str) -> str | None:
        """The client's name of an uploaded file (recorded in the results' parameters), else None."""
        return self._labels.get(os.path.realpath(path))

    def relabel(self, record: str) -> str:
        """A parameters record (JSON text) with every uploaded file's path replaced by the client's name."""
        def swap(value):
            if isinstance(value, str):
                return self._labels.get(value, value)
            if isinstance(value, dict):
                return {k: swap(v) for k, v in value.items()}
            return [swap(v) for v in value] if isinstance(value, list) else value

        return json.dumps(swap(json.loads(record)), sort_keys=True) if self._labels else record

    def cleanup(self) -> None:
        for upload in self._uploads.values():
            upload.part.unlink(missing_ok=True)
        self._uploads.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # --- uploads --------------------------------------------------------------------------------

    def expire(self) -> list:
        """Close the open uploads that got no chunk for `upload_idle_s` (their bytes removed); their ids."""
        now = time.monotonic()
        gone = [i for i, u in self._uploads.items() if now - u.touched > self.upload_idle_s]
        for upload_id in gone:
            self.abort(upload_id)
        return gone

    def used(self, expire: bool = True) -> int:
        """Bytes held: every file in the workspace, plus what open uploads announced and have not sent."""
        if expire:
            self.expire()
        held = 0
        if self._root is not None:
            for folder, _, files in os.walk(self._root):
                for name in files:
                    try:
                        held += os.lstat(os.path.join(folder, name)).st_size
                    except OSError:
                        pass
        return held + sum(u.size - u.received for u in list(self._uploads.values()))

    def job_room(self, job_id) -> None:
        """NoSpaceError when the workspace holds more than its budget: a job's files may not grow."""
        used = self.used(expire=False)  # the worker thread's call: the uploads belong to the reader thread
        if used > self.budget:
            raise NoSpaceError(f"job {job_id!r}: its files would take the workspace to {used / MB:.1f} MB of its "
                               f"{self.budget / MB:.0f} MB budget", hint="release finished jobs, or start the service "
                               "with a larger --max-workspace-mb")

    def require(self, more: int, what: str, request_id) -> None:
        """ProtocolError `no_space` unless `more` bytes fit in the budget."""
        used = self.used()
        if used + more > self.budget:
            raise ProtocolError("no_space", f"{what}: the workspace holds {used / MB:.1f} MB of its "
                                f"{self.budget / MB:.0f} MB budget; {more / MB:.1f} MB more do not fit",
                                "release finished jobs, or start the service with a larger "
                                "--max-workspace-mb", request_id)

    def begin(self, upload_id, name: str, size: int, sha256: str) -> None:
        self.require(size, f"upload of {size} bytes", upload_id)
        if upload_id in self._uploads:
            raise ProtocolError("duplicate_id", f"upload {upload_id!r} is already open", "give every upload a new id",
                                upload_id)
        if len(self._uploads) >= MAX_OPEN_UPLOADS:
            raise ProtocolError("busy", f"{MAX_OPEN_UPLOADS} uploads are open", "end or finish one first", upload_id)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.replace("\\", "/")).name)[-80:].lstrip(".") or "input"
        try:
            folder = self.root / "uploads" / str(next(self._numbers))  # a folder each: the name stays the client's
            folder.mkdir()
            part = folder / f"{stem}.part"
            part.touch(mode=0o600, exist_ok=False)
        except OSError as e:
            raise write_error(e, f"upload {upload_id!r}", "free disk space on the server", upload_id) from None
        self._uploads[upload_id] = _Upload(part, name, size, sha256)

    def chunk(self, upload_id, offset: int, data: str, request_id) -> None:
        upload = self._open(upload_id, request_id)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self.abort(upload_id)
            raise ProtocolError("bad_request", "upload_chunk 'data' is not base64", "send standard base64",
                                request_id) from None
        if len(raw) > CHUNK_BYTES:
            self.abort(upload_id)
            raise ProtocolError("bad_transfer", f"upload {upload_id!r}: a chunk of {len(raw)} bytes, over the "
                                f"{CHUNK_BYTES} a chunk may carry", "send smaller chunks; start the upload again",
                                request_id)
        if offset != upload.received or upload.received + len(raw) > upload.size:
            self.abort(upload_id)
            raise ProtocolError("bad_transfer", f"upload {upload_id!r}: a chunk at offset {offset} of {len(raw)} "
                                f"bytes does not follow the {upload.received} bytes received (size {upload.size})",
                                "send the chunks in order, then upload_end; start the upload again", request_id)
        try:
            with open(upload.part, "ab") as f:
                f.write(raw)
        except OSError as e:
            self.abort(upload_id)
            raise write_error(e, f"upload {upload_id!r}", "free disk space on the server (the upload was removed), "
                              "then send it again", request_id) from None
        upload.received += len(raw)
        upload.digest.update(raw)
        upload.touched = time.monotonic()

    def end(self, upload_id, request_id) -> Path:
        upload = self._open(upload_id, request_id)
        self._uploads.pop(upload_id)
        if upload.received != upload.size or upload.digest.hexdigest() != upload.sha256:
            upload.part.unlink(missing_ok=True)
            raise ProtocolError("bad_transfer", f"upload {upload_id!r}: received {upload.received} of {upload.size} "
                                "bytes, or their sha256 differs from the announced one",
                                "send the file again", request_id)
        path = upload.part.with_suffix("")
        upload.part.rename(path)  # alone in its folder: nothing is replaced
        self._labels[str(path)] = upload.label
        return path

    def unfinished(self, path: str) -> bool:
        """Whether `path` is (inside) the folder of an upload still in progress: not a file to use yet."""
        if not self._uploads:
            return False
        real = _resolved(path)
        return real is not None and any(real == u.part.parent or u.part.parent in real.parents for u in self._uploads.values())

    def job_folder(self, path: str) -> bool:
        """Whether `path` names a job folder `jobs/<name>` of this workspace (resolved)."""
        return self._root is not None and (real := _resolved(path)) is not None and real.parent == self._root / "jobs"

    def _open(self, upload_id, request_id) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise ProtocolError("unknown_upload", f"no open upload has id {upload_id!r}",
                                "begin it with upload_begin (an upload that met an error is closed)", request_id)
        return upload

    def abort(self, upload_id) -> None:
        """Close an open upload (none: nothing to do) and remove its bytes."""
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            upload.part.unlink(missing_ok=True)

    # --- release ------------------------------------------------------------------------------

    def releasable(self, path: str, request_id) -> Path:
        """What releasing `path` deletes: a job folder `jobs/<name>` itself, or the folder `uploads/<n>`
        of an uploaded file; ProtocolError `outside_workspace` for anything else."""
        if any(len(os.fsencode(part)) > 255 for part in Path(path).parts) or len(os.fsencode(path)) > 4096:
            raise ProtocolError("bad_request", f"release: the path {path[:80]!r}... is longer than a file "
                                "system takes", "release a path upload_end or a job's output_dir named", request_id)
        target = Path(os.path.normpath(path))
        root = self._root
        if root is not None and target.parent == root / "jobs":
            found = target
        elif root is not None and target.parent.parent == root / "uploads":
            found = target.parent
        else:
            raise ProtocolError("outside_workspace", f"release: {path!r} is neither a job folder nor an uploaded "
                                "file of this service's workspace", "release the output_dir of a finished job "
                                "or a path upload_end answered", request_id)
        if os.path.lexists(found) and os.path.realpath(found) != str(found):
            raise ProtocolError("outside_workspace", f"release: {path!r} leads out of the workspace",
                                "release only what this service made", request_id)
        if any(upload.part.parent == found for upload in self._uploads.values()):
            raise ProtocolError("busy", f"release: the upload of {path!r} is still open", "end it first",
                                request_id)
        return found

    def release(self, found: Path) -> bool:
        """Delete what `releasable` found; False when it was gone already."""
        for label in [p for p in self._labels if Path(p).parent == found]:
            del self._labels[label]
        if not found.exists():
            return False
        shutil.rmtree(found)
        return True

    # --- downloads ------------------------------------------------------------------------------

    def read_chunks(self, path: str, chunk_bytes: int, request_id):
        """(offset, base64 text) of each chunk of a workspace file, then returns (size, sha256)."""
        if not self.contains(path) or not os.path.isfile(path) or self.unfinished(path):
            raise ProtocolError("bad_request", f"download: {path!r} is not a file of this service's workspace",
                                "download the files a result event names", request_id)
        digest, offset = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                digest.update(chunk)
                yield offset, base64.b64encode(chunk).decode("ascii")
                offset += len(chunk)
        return offset, digest.hexdigest()


def write_error(e: OSError, what: str, hint: str, request_id) -> ProtocolError:
    """What a failed write in the workspace answers: `no_space` for a full disk, else `bad_output`."""
    return ProtocolError("no_space" if e.errno in NO_SPACE else "bad_output",
                         f"{what}: cannot write here: {e.strerror or e}", hint, request_id)


def _resolved(path: str) -> Path | None:
    """The path with links and `..` resolved; None for one this file system cannot spell."""
    try:
        return Path(os.path.realpath(path))
    except (UnicodeEncodeError, ValueError):
        return None


def sweep_stale(folder: str | None = None) -> list[Path]:
    """Remove the workspaces (in the temporary folder) whose owner process is gone; return them.
    A workspace without an owner file, of another user, or of a live process is left alone."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            pid = int((path / OWNER).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def alive(pid: int) -> bool:
    """Whether a process with this id runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe_matches(probe: dict | None) -> bool:
    """Whether the client's probe file is readable here with the client's token: a shared file system."""
    if not probe:
        return False
    try:
        with open(probe["path"], "rb") as f:
            return f.read(256).decode("utf-8", "replace") == probe["token"]
    except OSError:
        return False
