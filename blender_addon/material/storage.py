"""Where variants live for the .blend, the job folders' clean-up, and the check when the .blend is saved.

The rule (docs/guide/blender.md, "Where the files live"):
- a saved .blend with Keep Variants = Next to the .blend (the default): each variant is written into
  `variants/` next to the .blend and used with a relative path, so the project folder travels whole;
- Keep Variants = Packed, or a .blend never saved: the variants are packed into the .blend;
- either way the job folder (in the extension's user folder) is scratch: it is cleaned up by age and
  size (preferences), never while the open .blend still reads a file from it, and saving a .blend
  that does reports it (printed, shown in the panel, and in a pop-up when there is a window).
"""

import os
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from .. import paths
from .. import prefs as preferences

# What the last save found still read from job folders (the panel shows it until the next save).
save_warnings: list[str] = []


def jobs_root() -> Path:
    return preferences.user_folder("jobs")


def variant_destination(job_folder) -> tuple[Path, bool]:
    """(folder to write the variant files into, whether to pack them) for the open .blend."""
    folder = paths.variants_folder(bpy.data.filepath)
    if folder is None or preferences.get().variant_storage == "pack":
        return Path(job_folder), True
    return folder, False


def settle(image, pack: bool) -> None:
    """Pack the variant, or make its path relative to the saved .blend."""
    if pack:
        image.pack()
    elif bpy.data.filepath:
        image.filepath = bpy.path.relpath(image.filepath)


def _job_folder_of(path: str, root: Path) -> Path | None:
    try:
        relative = Path(os.path.abspath(path)).relative_to(root.resolve())
    except ValueError:
        return None
    return root / relative.parts[0] if relative.parts else None


def images_in_job_folders() -> list:
    """The images that read their file from a job folder (not packed): they break when it is cleaned up."""
    root = jobs_root()
    return [image for image in bpy.data.images
            if image.source == "FILE" and image.packed_file is None and image.filepath
            and _job_folder_of(bpy.path.abspath(image.filepath), root) is not None]


def clean_up(max_age_days: float | None = None) -> list[Path]:
    """Delete finished job folders past the preferences' age and size limits (or `max_age_days`)."""
    prefs, root = preferences.get(), jobs_root()
    in_use = tuple(str(_job_folder_of(bpy.path.abspath(i.filepath), root)) for i in images_in_job_folders())
    age = prefs.job_max_age_days if max_age_days is None else max_age_days
    return paths.clean_up_jobs(root, age, prefs.job_max_megabytes, in_use=in_use)


def warn(lines: list[str]) -> None:
    """Print `lines`, and show them in a pop-up when there is a window."""
    print("Texture Variants: " + " ".join(lines))
    wm = bpy.context.window_manager
    if bpy.app.background or wm is None or not wm.windows or bpy.context.window is None:
        return

    def draw(menu, _context):
        for line in lines:
            menu.layout.label(text=line)

    wm.popup_menu(draw, title="Texture Variants", icon="ERROR")


@persistent
def _after_save(filepath, *_args) -> None:
    left = images_in_job_folders()
    save_warnings[:] = []
    if left:
        names = ", ".join(image.name for image in left[:4]) + (" …" if len(left) > 4 else "")
        save_warnings[:] = [f"{len(left)} image(s) saved with files in the add-on's job folder: {names}",
                            "They break on another machine or after clean-up. To fix: pack them "
                            "(File > External Data > Pack Resources) or Bake them"]
        warn(save_warnings)


def register() -> None:
    bpy.app.handlers.save_post.append(_after_save)


def unregister() -> None:
    if _after_save in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.remove(_after_save)
