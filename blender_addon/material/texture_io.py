"""Images in and out of Blender: the reference written to the job folder, variants read back at the
source's depth and colour space.

The reference is always *copied* into the job folder, so the backend never touches (or locks) the
user's file, and a packed or generated image works just like a file on disk. The backend reads and
writes 8-bit display values; what comes back is written at the source's depth (see `source_kind`):
    byte    8-bit sources: the backend's PNG as it is
    deep    16-bit and float display-referred or data sources: a 16-bit PNG
    linear  scene-linear (HDR) sources: exposure-encoded for the backend, decoded back into a
            half-float OpenEXR (colour.py says how)
Every variant is tagged with the source's colour space. Files are written with Blender's own image
saving (`Image.save_render` with a scratch scene's output settings). A material's other maps go out
with their raw values at their depth (`export_map`, `map_kind`): 8-bit, 16-bit, or float (an OpenEXR
or float TIFF map: a 32-bit float TIFF both ways, values outside 0-1 kept, written by
pixels.float_tiff because Blender writes no 32-bit TIFF; Bake writes it as a 32-bit float OpenEXR).
Pixels cross between Blender and Python as numpy float32 arrays (`Image.pixels.foreach_get/set`).
"""

import contextlib
import io
import math
import os
import shutil
from pathlib import Path

import bpy
import numpy as np

from .. import paths
from ..errors import UserError
from ..paths import safe_stem
from ..pixels import colour, float_tiff, resample, sizing

# Formats the backend reads directly; anything else (EXR, HDR, ...) goes through Blender as PNG.
BACKEND_READS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga"}
BYTE, DEEP, LINEAR = "byte", "deep", "linear"
DEEP_TIFF = "deep-tiff"  # 16-bit maps that Blender writes for the backend
FLOAT = "float"  # float maps (data): 32-bit float OpenEXR in the .blend's files
LINEAR_FORMATS = {"OPEN_EXR", "OPEN_EXR_MULTILAYER", "HDR"}
SUFFIX = {BYTE: ".png", DEEP: ".png", LINEAR: ".exr", DEEP_TIFF: ".tif", FLOAT: ".exr"}
FORMATS = {BYTE: ("PNG", "8"), DEEP: ("PNG", "16"), LINEAR: ("OPEN_EXR", "16"), DEEP_TIFF: ("TIFF", "16"),
           FLOAT: ("OPEN_EXR", "32")}
MODES = {1: "BW", 3: "RGB", 4: "RGBA"}



def _file_path(image) -> str:
    return os.path.normpath(bpy.path.abspath(image.filepath, library=image.library))


def original_file(image) -> str | None:
    """The image's file on disk, if it has one (used to make sure bake never writes over it)."""
    if image.source == "FILE" and image.filepath:
        return _file_path(image)
    return None


def source_kind(image) -> str:
    """BYTE, DEEP or LINEAR: how the variants of `image` are stored (see the module docstring)."""
    if not image.is_float:
        return BYTE
    space = image.colorspace_settings
    name = space.name.lower()
    if not space.is_data and (image.file_format in LINEAR_FORMATS or name.startswith(("linear", "aces"))):
        return LINEAR
    return DEEP


def float_samples(image) -> bool:
    """Whether `image` holds float values (an OpenEXR or HDR file, a float TIFF, a float image made in
    Blender), not 8/16-bit integers, which Blender also loads as float images."""
    if not image.is_float:
        return False
    if image.file_format in LINEAR_FORMATS or image.source == "GENERATED":
        return True
    if image.file_format != "TIFF":
        return False
    if image.packed_file is not None:
        return float_tiff.holds_float(io.BytesIO(image.packed_file.data))
    path = original_file(image)
    try:
        with open(path, "rb") as f:
            return float_tiff.holds_float(f)
    except (OSError, TypeError):
        return False


def map_kind(image) -> str:
    """BYTE, DEEP or FLOAT: how a material map (data, never colour-managed) is stored."""
    if not image.is_float:
        return BYTE
    return FLOAT if float_samples(image) else DEEP


def bake_kind(image) -> str:
    """How Bake writes `image`: a float data image (a float map's variant) as FLOAT, else `source_kind`."""
    if image.colorspace_settings.is_data and float_samples(image):
        return FLOAT
    return source_kind(image)


@contextlib.contextmanager
def _output_settings(file_format: str, depth: str, mode: str, exposure: float = 0.0):
    """A scratch scene whose output settings `Image.save_render` uses: format, depth, the Standard view."""
    scene = bpy.data.scenes.new(".texture_variants_output")
    try:
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = exposure
        scene.view_settings.gamma = 1.0
        out = scene.render.image_settings
        out.file_format = file_format
        out.color_mode = mode
        out.color_depth = depth
        if file_format == "OPEN_EXR":
            out.exr_codec = "ZIP"
        yield scene
    finally:
        bpy.data.scenes.remove(scene)


def has_alpha(image) -> bool:
    return image.depth in (32, 64, 128) and image.alpha_mode != "NONE"


def save_as(image, path: Path, kind: str = BYTE, exposure: float = 0.0, alpha: bool | None = None,
            channels: int | None = None) -> Path:
    """Write `image`'s pixels to `path` (a new name) for `kind` (FORMATS: 8-bit PNG, 16-bit PNG, half
    EXR, 16-bit TIFF, float EXR), with `channels` (1, 3 or 4) or, when None, RGB or RGBA by `alpha`."""
    file_format, depth = FORMATS[kind]
    alpha = has_alpha(image) if alpha is None else alpha
    mode = MODES[channels] if channels else "RGBA" if alpha else "RGB"
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with _output_settings(file_format, depth, mode, exposure) as scene:
        image.save_render(str(temp), scene=scene)
    try:
        paths.copy_new_file(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def rgba_pixels(image) -> np.ndarray:
    """The image's RGBA floats, flat, rows bottom to top (Blender's order)."""
    width, height = image.size
    if width == 0 or height == 0:
        raise UserError("image_missing", f"The image '{image.name}' has no pixels",
                        "open the image in the Image Editor to check it, or pick another")
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels


@contextlib.contextmanager
def _scratch_copy(image, pixels=None, size=None, float_buffer=None, colorspace=None):
    """A temporary image with `image`'s (or the given) pixels, optionally resized; removed afterwards."""
    width, height = image.size
    temp = bpy.data.images.new(".texture_variants_scratch", width, height, alpha=True,
                               float_buffer=image.is_float if float_buffer is None else float_buffer)
    try:
        temp.colorspace_settings.name = colorspace or image.colorspace_settings.name
        temp.pixels.foreach_set(rgba_pixels(image) if pixels is None else pixels)
        if size is not None and tuple(size) != (width, height):
            temp.scale(*size)
        yield temp
    finally:
        bpy.data.images.remove(temp)


def write_pixels(image, path: Path) -> Path:
    """Save the image's current pixels (generated, painted, float) at its depth (`bake_kind`; a float
    map with its own channels), leaving `image` as it is."""
    kind = bake_kind(image)
    with _scratch_copy(image) as temp:
        channels = float_tiff.channels_of(rgba_pixels(temp)) if kind == FLOAT else None
        return save_as(temp, path, kind, alpha=has_alpha(image), channels=channels)


def _plain_copy(image, job_dir: Path, stem: str) -> Path | None:
    """The image's own bytes into the job folder when the backend reads them as they are, else None."""
    if image.is_dirty:
        return None
    if image.packed_file is not None:
        suffix = Path(image.filepath).suffix.lower() or "." + image.file_format.lower()
        if suffix in BACKEND_READS:
            path = job_dir / f"{stem}{suffix}"
            path.write_bytes(image.packed_file.data)
            return path
        return None
    source = Path(_file_path(image))
    if source.suffix.lower() in BACKEND_READS:
        return Path(shutil.copyfile(source, job_dir / f"{stem}{source.suffix.lower()}"))
    return None


def _huge_copy(image, job_dir: Path, stem: str, deep_colour: bool = True) -> Path | None:
    """A source over the backend's side limit handed over as its own file's bytes when the backend
    reads that file reduced by the same factor the add-on would (sizing.backend_reduces); else None.
    `deep_colour`: whether a 16-bit colour file may go (a map's 16-bit colour is not read reduced)."""
    if not sizing.backend_reduces(*image.size) or image.file_format not in {"PNG", "JPEG", "TARGA", "BMP", "WEBP"}:
        return None
    if not deep_colour and image.is_float and image.channels > 1:
        return None
    return _plain_copy(image, job_dir, stem)


MISSING_HINT = "find it again with File > External Data > Find Missing Files, or open the right file in the node"


def missing_file(image) -> str | None:
    """The path of `image`'s file when it should be on disk and is not (neither packed nor generated)."""
    if image.packed_file is None and image.source == "FILE" and not Path(_file_path(image)).is_file():
        return _file_path(image)
    return None


def _check_exportable(image) -> None:
    if image.source in {"SEQUENCE", "MOVIE", "TILED", "VIEWER"}:
        raise UserError("bad_input", f"The image '{image.name}' is a {image.source.lower()} image",
                        "use a single still image in the Image Texture node")
    missing = missing_file(image)
    if missing:
        raise UserError("image_missing", f"The image file of '{image.name}' is missing: {missing}", MISSING_HINT)


def export_reference(image, job_dir: str | os.PathLike, role: str = "reference") -> tuple[Path, dict]:
    """Write `image` into the job folder as the backend's input (`role`: reference, guide or mask): (its
    path, how it is encoded).

    At its own size, unless it is larger than the backend reads as it is: then its file's bytes when
    the backend reads that file reduced itself (`_huge_copy`: no pixel crosses into Python), else
    downsampled here by the same whole factor (sizing.export_factor, a block mean with numpy). The
    encoding {"kind", "scale"} is what `import_variant` needs to bring the variants back.
    """
    job_dir = Path(job_dir)
    stem = f"{role}-{safe_stem(image.name)}"
    _check_exportable(image)
    kind = source_kind(image)
    encoding = {"kind": kind, "scale": 1.0}
    factor = sizing.export_factor(*image.size)
    if kind != LINEAR:
        copied = _plain_copy(image, job_dir, stem) if factor == 1 else _huge_copy(image, job_dir, stem)
        if copied is not None:
            return copied, encoding
    if factor > 1:
        return _export_downsampled(image, job_dir / stem, encoding, factor), encoding
    path = job_dir / f"{stem}.png"
    with _scratch_copy(image) as temp:
        if kind == LINEAR:
            encoding["scale"] = colour.exposure_scale(colour.brightest(rgba_pixels(temp)))
        save_as(temp, path, BYTE, exposure=-math.log2(encoding["scale"]), alpha=has_alpha(image))
    return path, encoding


def _export_downsampled(image, stem: Path, encoding: dict, factor: int) -> Path:
    """`image` reduced by `factor` (a block mean of its pixels) written as `stem` + suffix: an 8-bit
    source's bytes as an uncompressed 8-bit TIFF (written by numpy, seconds faster than Blender's PNG
    encoder at 8192²), anything else through Blender at the backend's 8 bits (a LINEAR source
    exposure-encoded as on the plain path, its scale into `encoding`)."""
    width, height, byte, channels = *image.size, encoding["kind"] == BYTE, 4 if has_alpha(image) else 3
    small, new_width, new_height = resample.block_mean(rgba_pixels(image), width, height, factor, byte, channels)
    if byte:  # the job folder is new and ours: written in place
        return float_tiff.write(stem.with_name(f"{stem.name}.tif"), small, new_width, new_height, channels, bits=8)
    if encoding["kind"] == LINEAR:
        encoding["scale"] = colour.exposure_scale(colour.brightest(small))
    temp = bpy.data.images.new(".texture_variants_scratch", new_width, new_height, alpha=True, float_buffer=True)
    try:
        temp.colorspace_settings.name = image.colorspace_settings.name
        temp.pixels.foreach_set(small)
        return save_as(temp, stem.with_name(f"{stem.name}.png"), BYTE, exposure=-math.log2(encoding["scale"]),
                       alpha=has_alpha(image))
    finally:
        bpy.data.images.remove(temp)


def export_map(image, job_dir: str | os.PathLike, name: str) -> Path:
    """Write the material map `image` into the job folder for the backend, never colour-managed, at its
    depth (`map_kind`): a float image as a 32-bit float TIFF of its pixels (float_tiff; every value
    kept, outside 0-1 too); else its own file when the backend reads that as it is, or written by
    Blender: 8-bit PNG, or a 16-bit TIFF for 16-bit images. The values are the file's (for linear
    and float images, the shader's). At its own size (the backend fits it to the base colour), unless
it is larger than the backend reads: then reduced like the reference, as an 8-bit TIFF (8-bit maps)
or a float TIFF (deeper ones)."""
    job_dir = Path(job_dir)
    stem = f"map-{name}-{safe_stem(image.name)}"
    _check_exportable(image)
    kind = map_kind(image)
    factor = sizing.export_factor(*image.size)
    if factor > 1 and kind != FLOAT:
        copied = _huge_copy(image, job_dir, stem, deep_colour=False)
        if copied is not None:
            return copied
    if factor > 1:  # larger than the backend reads: a block mean, the values kept (8-bit stays 8-bit)
        channels = 4 if has_alpha(image) else 3
        rgba, width, height = resample.block_mean(rgba_pixels(image), *image.size, factor, kind == BYTE, channels)
        if kind == BYTE:
            return float_tiff.write(job_dir / f"{stem}.tif", rgba, width, height, channels, 8)
        return float_tiff.write(job_dir / f"{stem}.tif", rgba, width, height, float_tiff.channels_of(rgba))
    if kind == FLOAT:
        rgba = rgba_pixels(image)
        return float_tiff.write(job_dir / f"{stem}.tif", rgba, *image.size, float_tiff.channels_of(rgba))
    if not image.is_dirty:
        copied = _plain_copy(image, job_dir, stem)
        if copied is not None:
            return copied
    kind = DEEP_TIFF if kind == DEEP else BYTE
    # Written in its own colour space, its pixels come back to the file's values; linear ones are data.
    colorspace = "Non-Color" if source_kind(image) == LINEAR else None
    with _scratch_copy(image, colorspace=colorspace) as temp:
        return save_as(temp, job_dir / f"{stem}{SUFFIX[kind]}", kind, alpha=has_alpha(image))


def import_variant(path: str, name: str, like, encoding: dict, size: tuple[int, int], folder: Path,
                   colorspace: str | None = None, stem: str | None = None) -> Path:
    """The backend's variant at `path` brought to the source's depth, size and range, written into
    `folder` (a new file); returns that file (the backend's own file when it is already right).
    `colorspace`: the one to read and write it in (a map's "Non-Color"), else `like`'s; `stem`: the
    new file's name without suffix (default: from `name`)."""
    kind = encoding.get("kind", BYTE)
    stem = stem or safe_stem(name)
    loaded = bpy.data.images.load(path, check_existing=False)
    alpha = has_alpha(loaded)
    try:
        if kind == BYTE and tuple(loaded.size) == tuple(size):
            target = paths.unique_target(folder, stem, ".png")
            return Path(path) if Path(path).parent == folder else paths.copy_new_file(path, target)
        target = paths.unique_target(folder, stem, SUFFIX[kind])
        colorspace = colorspace or (like.colorspace_settings.name if like is not None else None)
        if kind == LINEAR:
            decoded = colour.decode(rgba_pixels(loaded), float(encoding.get("scale", 1.0)))
            with _scratch_copy(loaded, decoded, size, float_buffer=True, colorspace=colorspace) as temp:
                return save_as(temp, target, LINEAR, alpha=alpha)
        loaded.colorspace_settings.name = colorspace or loaded.colorspace_settings.name
        with _scratch_copy(loaded, size=size) as temp:
            return save_as(temp, target, kind, alpha=alpha)
    finally:
        bpy.data.images.remove(loaded)


def load_variant(path: str, name: str, like=None, kind: str = BYTE) -> bpy.types.Image:
    """Read a variant file as a new image treated like the original (colour space, alpha).

    A LINEAR variant keeps the colour space Blender gives its EXR: it holds scene-linear values."""
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    if like is not None:  # None when the original was deleted while the job ran
        if kind != LINEAR:
            image.colorspace_settings.name = like.colorspace_settings.name
        image.alpha_mode = like.alpha_mode
    return image
