"""A job's folder (the request's output_dir) and how the job's files get into it.

A job writes into a staging folder of its own inside the job folder (`.staging-<pid>-<n>`, hidden,
on the same file system): its previews while it runs, then every result. Only after the last result
is written are the results moved into the job folder, each under a name that was free (never
replacing a file), and its completion marker (`.job-<id>.done.json`, listing them) goes in last. A
finished-looking file therefore means a finished job.

Before a job makes its staging folder it leaves a record of it in the service's records folder
(`records`); the record is removed when the job's files are in place or removed. A service that was
killed (SIGKILL) leaves records behind: the next service start removes each dead job's staging
folder and the files it had moved in without its marker, only those the staging folder's moving
plan proves are the job's own (same inode), and logs what it removed. A job that fails or is
cancelled removes its staging folder, whatever it moved, and the job folder if it made it and it
is empty.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from backend.errors import OutputError, classify
from backend.service.transfer import alive

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
MARKER_SUFFIX = ".done.json"
PLAN = "moving.json"  # in the staging folder: what moves into the job folder, written before the first move
_numbers = itertools.count(1)


def safe_name(text: str, limit: int = 60) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "texture"
    return name[:limit]


def _write_json(path: Path, data) -> None:
    from backend.images import write_atomic

    write_atomic(path, lambda f: f.write(json.dumps(data, indent=1).encode()), overwrite=True)


class JobOutput:
    """The job folder: previews while the job runs, the results at the end. A job that fails or is
    cancelled leaves the folder as it found it."""

    def __init__(self, job, records: Path | None = None, room: Callable[[], None] | None = None):
        """`records`: where the job records its staging folder (None: no record); `room()` raises
        when the job's files may not grow any more (a workspace budget)."""
        self.job = job
        self.folder = Path(job.output_dir)
        self.stem = safe_name(Path(job.input).stem)
        self.records, self._room = records, room
        self._created = False
        self._staging: Path | None = None
        self._record: Path | None = None
        self._staged: list[str] = []  # result files in the staging folder, in the order written
        self._moved: list[Path] = []
        self._preview: Path | None = None
        self._last_preview_step = 0
        self._first_step_at: float | None = None
        self._first_step = 0

    def check(self) -> None:
        """Refuse a folder that cannot be the job folder before any work, creating nothing."""
        folder = self.folder
        try:
            os.fsencode(folder)  # Path.exists() answers False for a path it cannot encode
            if folder.exists() and not folder.is_dir():
                raise OutputError(f"output_dir {folder} is a file, not a folder", hint="choose a folder")
            if not folder.exists() and not folder.parent.is_dir():
                raise OutputError(f"cannot make the job folder {folder}: {folder.parent} does not exist",
                                  hint="create the folder that holds it, or choose another output folder")
        except (OSError, UnicodeEncodeError) as e:
            raise classify(e) from e

    def _stage(self) -> Path:
        """The staging folder, made (with the job folder, and recorded first) on the first write."""
        if self._staging is None:
            created = not self.folder.is_dir()
            staging = self.folder / f"{STAGING_PREFIX}{os.getpid()}-{next(_numbers)}"
            if self.records is not None:
                self._record = self.records / f"{staging.name[len(STAGING_PREFIX):]}.json"
                try:
                    self.records.mkdir(parents=True, exist_ok=True)
                    _write_json(self._record, {"pid": os.getpid(), "job": self.job.id,
                                               "staging": str(staging.absolute()), "created": created})
                except OSError as e:  # the job does not depend on it: only a kill's clean-up does
                    log.warning("cannot record the job's staging folder in %s (%s): a kill would leave it behind",
                                self.records, e)
                    self._record = None
            if created:
                self.folder.mkdir()  # its parent, never: a missing parent is the caller's mistake
                self._created = True
            staging.mkdir()
            self._staging = staging
        return self._staging

    def _save(self, image, stem: str, companions: tuple[str, ...] = ()) -> Path:
        """Write `image` into the staging folder under a name free there and in the job folder."""
        from backend.images import save_png_unique

        staging = self._stage()
        path = save_png_unique(image, staging, stem, companions, also=(self.folder,))
        self._made_room()
        return path

    def _made_room(self) -> None:
        if self._room is not None:
            self._room()

    def eta(self, step: int, total: int) -> float | None:
        """Seconds left, from the mean duration of the steps since the first one; None at the first step
        (its time is mostly model loading: counting it gave estimates many times too long)."""
        now = time.monotonic()
        if self._first_step_at is None:
            self._first_step_at, self._first_step = now, step
            return 0.0 if step >= total else None
        done = step - self._first_step
        if done <= 0:
            return None
        return max(0.0, (now - self._first_step_at) / done * (total - step))

    def write_preview(self, preview, step: int, total: int) -> Path | None:
        every = self.job.preview_every
        if preview is None or not every:
            return None
        if step - self._last_preview_step < every and step != total:
            return None
        path = self._save(preview, f"{self.stem}-preview-{step:04d}")
        self._remove_preview()  # keep only the newest preview on disk
        self._preview, self._last_preview_step = path, step
        return path

    def write_results(self, images) -> list[dict]:
        """Write every result into the staging folder, then move them all into the job folder with the
        completion marker last; the result event's `files` (paths in the job folder)."""
        from backend.framing import tiled
        from backend.materials import variants as material

        files = []
        for image in images:
            if self.job.tileset is not None:  # a tile set: its atlases and JSON (backend/tileset/atlas.py)
                files.append(self._tileset(image))
                continue
            params = json.loads(image.info.get("parameters", "{}"))
            kind = "restyle" if params.get("restyle_prompt") else params.get("engine", "variant")
            if self.job.upscale:
                kind = f"x{self.job.upscale}-{kind}"
            mask, band = image.info.get("restyle_mask"), image.info.get("band")
            companions = (material.endings(image) + (("-mask.png",) if mask is not None else ())
                          + (("-band.png",) if band is not None else ()))
            if self.job.maps_only:
                stem = f"{self.stem}-maps"
            elif self.job.tileable is not None:
                stem = f"{self.stem}-tileable"
            elif self.job.tileset_layout is not None:
                stem = image.info["stem"]
            else:
                stem = f"{self.stem}-{kind}-s{params.get('seed', len(files))}"
            path = self._result(self._save(image, stem, companions))
            entry = {"path": str(path), "parameters": params}
            if "maps" in image.info:
                staged = material.save(image, self._staging / path.name)
                entry["maps"] = {name: str(self._result(Path(p))) for name, p in staged.items()}
                self._made_room()
            if mask is not None:  # restyle: the mask used, beside the result
                entry["mask"] = str(self._result(self._save(mask, f"{path.stem}-mask")))
            if band is not None:  # make_tileable: the re-made pixels, beside the result
                entry["band"] = str(self._result(self._save(band, f"{path.stem}-band")))
            if self.job.tiled_preview:
                entry["tiled"] = str(self._result(self._save(tiled(image, 3), f"{path.stem}-tiled3x3")))
            files.append(entry)
        self._remove_preview()
        self._publish(files)
        return files

    def _tileset(self, tileset) -> dict:
        """Stage a tile set's atlases and JSON under a stem free in the job folder too; its `files` entry."""
        from backend.tileset.atlas import RECORD

        name, n = self.stem, 1
        while any((self.folder / f).exists() for f in (*tileset.file_names(name).values(), f"{name}{RECORD}")):
            n += 1
            name = f"{self.stem}-{n}"
        written = tileset.save(self._stage(), name)
        self._made_room()
        final = {key: str(self._result(Path(path))) for key, path in written.items()}
        record = json.loads(Path(written["json"]).read_text(encoding="utf-8"))
        return {"path": final["color"], "json": final["json"],
                "maps": {k: v for k, v in final.items() if k not in ("json", "color")},
                "parameters": {k: v for k, v in record.items() if k != "tiles"}}

    def _result(self, staged: Path) -> Path:
        """A result written into the staging folder: its path once moved into the job folder."""
        self._staged.append(staged.name)
        return self.folder / staged.name

    def _publish(self, files: list[dict]) -> None:
        """Move the staged results into the job folder, then the completion marker; end the record."""
        from backend.images import unique_path

        staging = self._stage()
        marker = unique_path(self.folder, f".job-{safe_name(str(self.job.id))}", MARKER_SUFFIX, also=(staging,))
        _write_json(staging / marker.name, {"job": self.job.id, "files": files})
        names = [*self._staged, marker.name]
        _write_json(staging / PLAN, [{"name": name, "inode": os.lstat(staging / name).st_ino} for name in names])
        for name in names:
            try:
                os.link(staging / name, self.folder / name)  # never replaces: a name taken meanwhile fails
            except FileExistsError:
                raise OutputError(f"{self.folder / name} appeared while the job moved its results in",
                                  hint="run the job again; give each job a folder of its own") from None
            self._moved.append(self.folder / name)
        self._end_staging()

    def _remove_preview(self) -> None:
        if self._preview is not None:
            self._preview.unlink(missing_ok=True)
            self._preview = None

    def _end_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None

    def discard(self) -> None:
        """Remove every file this job wrote, then the folder if the job made it and it is empty."""
        for path in self._moved:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove %s", path)
        self._moved.clear()
        self._preview = None
        self._end_staging()
        if self._created:
            try:
                os.rmdir(self.folder)
            except OSError:  # something else is in it now: it is not the job's to remove
                pass


def sweep_unfinished(records: Path) -> list[str]:
    """Clean up after the jobs of services that died (their records in `records`); what was removed."""
    removed: list[str] = []
    for record in sorted(records.glob("*.json")) if records.is_dir() else ():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            pid, staging, created = int(data["pid"]), Path(data["staging"]), bool(data["created"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable job record %s", record)
            continue
        if pid == os.getpid() or alive(pid):
            continue
        if staging.name.startswith(STAGING_PREFIX):  # a record names nothing else
            removed += _undo(staging, created)
        record.unlink(missing_ok=True)
    return removed


def _undo(staging: Path, created: bool) -> list[str]:
    """Remove a dead job's staging folder and, unless its marker is in place, what it had moved in."""
    folder, removed = staging.parent, []
    try:
        plan = json.loads((staging / PLAN).read_text(encoding="utf-8"))
        moved = [(folder / entry["name"], entry["inode"]) for entry in plan]
    except (OSError, ValueError, KeyError, TypeError):
        moved = []  # killed before moving anything
    finished = bool(moved) and _same(*moved[-1])  # the marker went in last: every result is there
    if not finished:
        for path, inode in moved:
            if _same(path, inode):  # the job's own file (a name was free when it moved in)
                path.unlink()
                removed.append(str(path))
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(str(staging))
    if created and not finished:
        try:
            os.rmdir(folder)
            removed.append(str(folder))
        except OSError:  # missing, or not empty: not the job's to remove
            pass
    return removed


def _same(path: Path, inode: int) -> bool:
    try:
        return os.lstat(path).st_ino == inode
    except OSError:
        return False
