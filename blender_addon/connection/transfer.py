"""Files crossing the protocol channel to a backend that does not share this machine's files
(docs/PROTOCOL.md, "Transfers"). Standard library only.

A `Channel` is the client's side: `send` queues a request (False when it will not be sent; a bulk
one waits while the writer's buffer is full, until `cancelled()`), `open(id)` gives the queue the answers to
that request arrive on (a death of the backend arrives there too, as an `error` with code
`backend_died`) and `close(id)` forgets it. Uploads go in order in base64 chunks of at most
CHUNK_BYTES with the whole file's sha256; downloads are written to a temporary file in the job
folder, checked against the announced sha256 and size, then linked under a free name: a file is
never replaced, and a transfer that fails leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import as_created, unique_target

CHUNK_BYTES = 256 << 10
ANSWER_TIMEOUT_S = 120.0
PASSED_ON = ("backend_died", "backend_stalled", "cancelled")  # codes an answer keeps (not transfer_failed)
RELEASE_TIMEOUT_S = 10.0  # clean-up only: a backend that does not answer keeps the files until it exits


class TransferError(UserError):
    pass


@dataclass(frozen=True)
class Channel:
    send: Callable[..., bool]  # (message, bulk=False) -> queued
    open: Callable[[str], queue.Queue]
    close: Callable[[str], None]
    new_id: Callable[[str], str]
    cancelled: Callable[[], bool] = lambda: False

    @contextmanager
    def request(self, kind: str, **fields):
        """Send a request; yield the queue of its answers; forget the request afterwards."""
        request_id = self.new_id(kind)
        answers = self.open(request_id)
        try:
            self.send({"id": request_id, "type": kind, **fields})
            yield answers
        finally:
            self.close(request_id)


def _answer(answers: queue.Queue, what: str, timeout: float) -> dict:
    try:
        event = answers.get(timeout=timeout)
    except queue.Empty:
        raise TransferError("transfer_failed", f"{what}: the backend did not answer within {timeout:g} s",
                            "check the connection to the backend; the next request reconnects") from None
    if event.get("type") == "error":
        code = event["code"] if event.get("code") in PASSED_ON else "transfer_failed"
        raise TransferError(code, f"{what}: {event.get('message', 'failed')}",
                            event.get("hint") or "the next request reconnects to the backend")
    return event


def upload(path: str, channel: Channel, timeout: float = ANSWER_TIMEOUT_S) -> str:
    """Send the file at `path`; return the path the backend keeps it under (in its workspace)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    with channel.request("upload_begin", name=path, size=size, sha256=digest.hexdigest()) as answers:
        begin = _answer(answers, f"uploading {path}", timeout)["upload"]
    with open(path, "rb") as f:
        offset = 0
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            if channel.cancelled():
                raise TransferError("cancelled", f"uploading {path}: cancelled", "")
            if not channel.send({"id": f"{begin}.{offset}", "type": "upload_chunk", "upload": begin,
                                 "offset": offset, "data": base64.b64encode(block).decode("ascii")}, bulk=True):
                if channel.cancelled():
                    raise TransferError("cancelled", f"uploading {path}: cancelled", "")
                raise TransferError("backend_died", f"uploading {path}: the backend is gone",
                                    "the next request starts it again; its log says why")
            offset += len(block)
    with channel.request("upload_end", upload=begin) as answers:
        return _answer(answers, f"uploading {path}", timeout)["path"]


def upload_inputs(input_path: str, fields: dict, channel: Channel) -> tuple[str, dict, list[str]]:
    """Upload a job's input and its other input files (a material's maps, a mask, a structure guide):
    (the input's path on the backend, the fields naming the uploaded copies, every path uploaded)."""
    fields, uploaded = dict(fields), [upload(input_path, channel)]
    if fields.get("maps"):
        fields["maps"] = {name: upload(os.path.abspath(path), channel) for name, path in fields["maps"].items()}
        uploaded += fields["maps"].values()
    for key in ("mask", "sketch"):
        if fields.get(key):
            fields[key] = upload(os.path.abspath(fields[key]), channel)
            uploaded.append(fields[key])
    return uploaded[0], fields, uploaded


def release(paths: list[str], channel: Channel, timeout: float = RELEASE_TIMEOUT_S) -> list[str]:
    """Ask the backend to delete these files of an ended job; returns what went wrong (it stops at the
    first problem: a backend that refused or did not answer one would not do better with the next)."""
    for path in paths:
        with channel.request("release", path=path) as answers:
            try:
                _answer(answers, f"releasing {path}", timeout)
            except TransferError as e:
                return [e.message]
    return []


def download(remote: str, folder: Path, channel: Channel, *, chunk_bytes: int = CHUNK_BYTES,
             timeout: float = ANSWER_TIMEOUT_S) -> Path:
    """Fetch the backend's file `remote` into `folder` under a free name like its own; return the path."""
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".tmp", dir=folder)
    as_created(fd)
    try:
        with os.fdopen(fd, "wb") as out, channel.request("download", path=remote, chunk_bytes=chunk_bytes) as got:
            _receive(out, got, remote, timeout)
        name = remote.replace("\\", "/").rsplit("/", 1)[-1]
        stem, dot, suffix = name.rpartition(".")
        return _link_new(tmp, folder, stem if dot else name, f".{suffix}" if dot else "")
    finally:
        os.unlink(tmp)


def _receive(out, got: queue.Queue, remote: str, timeout: float) -> None:
    digest, size = hashlib.sha256(), 0
    while True:
        event = _answer(got, f"downloading {remote}", timeout)
        if event.get("type") == "chunk":
            data = base64.b64decode(event.get("data", ""))
            if event.get("offset") != size:
                raise TransferError("transfer_failed", f"downloading {remote}: a chunk arrived out of order",
                                    "a bug in the backend: see its log")
            out.write(data)
            digest.update(data)
            size += len(data)
            continue
        if event.get("size") != size or event.get("sha256") != digest.hexdigest():
            raise TransferError("transfer_failed", f"downloading {remote}: {size} bytes arrived, their sha256 "
                                "differs from the backend's", "generate again; the next request reconnects")
        out.flush()
        os.fsync(out.fileno())
        return


def _link_new(tmp: str, folder: Path, stem: str, suffix: str) -> Path:
    for _ in range(1000):  # link() refuses a name taken meanwhile: nothing is ever replaced
        target = unique_target(folder, stem, suffix)
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            continue
    raise TransferError("bad_output", f"no free file name for {stem} in {folder}", "choose another output folder")


def fetch_result(result: dict, folder: Path, channel: Channel, chunk_bytes: int, log) -> dict:
    """A remote job's final event: its result with every file downloaded into `folder` (local paths),
    or an error event (and nothing of it kept)."""
    job_id = result.get("id")
    try:
        return ResultFetch(folder).run(result, lambda remote: download(remote, folder, channel,
                                                                         chunk_bytes=chunk_bytes))
    except (UserError, OSError) as e:
        code, message = getattr(e, "code", "bad_output"), getattr(e, "message", str(e))
        log(f"backend: job {job_id}: {message}")
        return {"type": "error", "id": job_id, "job": job_id, "code": code,
                "message": f"the results could not be brought back: {message}",
                "hint": "nothing of this job was kept; generate again (the next request reconnects)"}


class ResultFetch:
    """Downloads the files of one remote result into the local job folder; on failure removes them all
    (and the folder if it made it), so the job either has every file or none."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._made = False
        self._written: list[Path] = []

    def run(self, result: dict, fetch: Callable[[str], Path]) -> dict:
        try:
            if not self.folder.is_dir():
                self.folder.mkdir()  # never its parents: a missing parent is the caller's mistake
                self._made = True
            files = []
            for entry in result.get("files", []):
                local = dict(entry)
                # the variant, its 3x3 copy, a restyle's mask, make_tileable's band, a tile set's description
                for key in ("path", "tiled", "mask", "band", "json"):
                    if entry.get(key):
                        local[key] = str(self._keep(fetch(entry[key])))
                if entry.get("maps"):  # a material's maps beside the variant (docs/guide/materials.md, "Whole materials")
                    local["maps"] = {name: str(self._keep(fetch(path))) for name, path in entry["maps"].items()}
                files.append(local)
        except BaseException:
            self.discard()
            raise
        return result | {"folder": str(self.folder), "files": files}

    def _keep(self, path: Path) -> Path:
        self._written.append(path)
        return path

    def discard(self) -> None:
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written.clear()
        if self._made:
            try:
                os.rmdir(self.folder)
            except OSError:
                pass
