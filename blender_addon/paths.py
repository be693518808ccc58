"""Where the add-on reads and writes files: job folders, variants, baked textures. Plain Python (no bpy).

Rules: the add-on writes only into its own job folders (in the extension's user folder), the
variants folder next to the saved .blend and the bake folder; it never overwrites a file, and
never the original texture; files appear atomically.

Job folders are scratch space: a job's folder is marked finished (FINISHED_MARK) once its variants
are loaded into the .blend, and `clean_up_jobs` deletes finished ones older than the age limit, then
the oldest finished ones while all of them together are over the size limit; a folder that is not
marked finished (a running job) or that the open .blend still reads from is never deleted.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from .errors import UserError

BAKE_SUBFOLDER = "textures"
VARIANTS_SUBFOLDER = "variants"
FINISHED_MARK = ".finished"


def safe_stem(name: str, fallback: str = "texture") -> str:
    """A file name stem from an image or material name: no folders, no odd characters."""
    name = re.sub(r"\.(png|jpe?g|tiff?|exr|webp|bmp|tga|hdr)$", "", name, flags=re.IGNORECASE)
    stem = re.sub(r"[^\w.-]+", "_", name).strip("._")
    return stem[:80] or fallback


def new_job_folder(jobs_root: str | os.PathLike) -> Path:
    """A fresh, empty folder for one job: `jobs_root/20250101-120000-ab12cd`."""
    root = Path(jobs_root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def variants_folder(blend_path: str) -> Path | None:
    """`variants/` next to the saved .blend; None when it is not saved (the variants are packed then)."""
    return Path(blend_path).parent / VARIANTS_SUBFOLDER if blend_path else None


def mark_finished(job_folder: str | os.PathLike) -> None:
    """The job is over and its variants are loaded: its folder may be cleaned up later."""
    (Path(job_folder) / FINISHED_MARK).touch()


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def clean_up_jobs(jobs_root: str | os.PathLike, max_age_days: float, max_megabytes: float,
                  in_use: tuple[str | os.PathLike, ...] = (), now: float | None = None) -> list[Path]:
    """Delete finished job folders: older than `max_age_days`, then the oldest while over `max_megabytes`.

    Returns the deleted folders. Unfinished ones and those in `in_use` are kept whatever their age.
    """
    root = Path(jobs_root)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    keep = {os.path.normcase(os.path.abspath(p)) for p in in_use}
    finished = []  # (finished at, folder, bytes), oldest first
    for folder in root.iterdir():
        mark = folder / FINISHED_MARK
        if folder.is_dir() and mark.is_file() and os.path.normcase(str(folder.absolute())) not in keep:
            finished.append((mark.stat().st_mtime, folder, _folder_bytes(folder)))
    finished.sort(key=lambda entry: entry[0])
    total = sum(size for _, _, size in finished)
    removed = []
    for finished_at, folder, size in finished:
        if now - finished_at > max_age_days * 86400 or total > max_megabytes * 1e6:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            total -= size
    return removed


def bake_folder(blend_path: str, chosen_folder: str = "") -> Path:
    """`textures/` next to the saved .blend, or the folder chosen in the preferences (absolute)."""
    if chosen_folder:
        return Path(chosen_folder)
    if not blend_path:
        raise UserError("not_saved", "The .blend file has not been saved, so there is no folder to bake into",
                        "save the .blend file first, or choose a Bake folder in the add-on preferences")
    return Path(blend_path).parent / BAKE_SUBFOLDER


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def unique_target(folder: str | os.PathLike, stem: str, suffix: str = ".png",
                  protected: tuple[str | os.PathLike, ...] = ()) -> Path:
    """`folder/stem.png`, else `stem-2.png`, ...: a name that is free and is none of `protected`."""
    folder = Path(folder)
    guarded = {os.path.normcase(os.path.abspath(p)) for p in protected if p}
    candidate, n = folder / f"{stem}{suffix}", 2
    while candidate.exists() or os.path.normcase(os.path.abspath(candidate)) in guarded:
        candidate, n = folder / f"{stem}-{n}{suffix}", n + 1
    return candidate


def process_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(fd: int) -> None:
    """Give a mkstemp file (0600) the permissions a normally created file gets (0644 under umask 022),
    so a render farm or a colleague can read the variants and baked textures."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~process_umask())


def copy_new_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy `source` to `target`, which must not exist; readers never see half a file.

    The copy goes to a temporary name in the target folder and is then hard-linked into place:
    link() fails if the name appeared meanwhile, so an existing file is never replaced.
    """
    source, target = Path(source), Path(target)
    if target.exists() or _same_file(source, target):
        raise FileExistsError(f"refusing to overwrite {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    as_created(fd)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError:  # file systems without hard links: exclusive create, then copy
            with open(target, "xb") as out, open(tmp, "rb") as src:
                shutil.copyfileobj(src, out)
    finally:
        os.unlink(tmp)
    return target
