"""Images in and out of Blender: the reference written to the job folder, variants read back.

The reference is always *copied* into the job folder, so the backend never touches (or locks) the
user's file, and a packed or generated image works just like a file on disk.
"""

import array
import os
import shutil
from pathlib import Path

import bpy

from . import edges
from .errors import UserError
from .paths import safe_stem

# Formats the backend reads directly; anything else (EXR, HDR, ...) goes through Blender as PNG.
BACKEND_READS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga"}


def _file_path(image) -> str:
    return os.path.normpath(bpy.path.abspath(image.filepath, library=image.library))


def original_file(image) -> str | None:
    """The image's file on disk, if it has one (used to make sure bake never writes over it)."""
    if image.source == "FILE" and image.filepath:
        return _file_path(image)
    return None


def write_pixels_png(image, path: Path) -> Path:
    """Save the image's current pixels (generated, painted, float) as a PNG, leaving `image` as it is."""
    width, height = image.size
    if width == 0 or height == 0:
        raise UserError("image_missing", f"The image '{image.name}' has no pixels",
                        "open the image in the Image Editor to check it, or pick another")
    pixels = array.array("f", bytes(4 * width * height * 4))
    image.pixels.foreach_get(pixels)
    temp = bpy.data.images.new(".texture_variants_export", width, height, alpha=True,
                               float_buffer=image.is_float)
    try:
        temp.colorspace_settings.name = image.colorspace_settings.name
        temp.pixels.foreach_set(pixels)
        temp.filepath_raw = str(path)
        temp.file_format = "PNG"
        temp.save()
    finally:
        bpy.data.images.remove(temp)
    return path


def export_reference(image, job_dir: str | os.PathLike, role: str = "reference") -> Path:
    """Write `image` into the job folder as the backend's input (`role`: reference or guide); returns its path."""
    job_dir = Path(job_dir)
    stem = f"{role}-{safe_stem(image.name)}"
    if image.source in {"SEQUENCE", "MOVIE", "TILED", "VIEWER"}:
        raise UserError("bad_input", f"The image '{image.name}' is a {image.source.lower()} image",
                        "use a single still image in the Image Texture node")
    if image.packed_file is not None:
        suffix = Path(image.filepath).suffix.lower() or "." + image.file_format.lower()
        if suffix in BACKEND_READS and not image.is_dirty:
            path = job_dir / f"{stem}{suffix}"
            path.write_bytes(image.packed_file.data)
            return path
        return write_pixels_png(image, job_dir / f"{stem}.png")
    if image.source == "FILE":
        source = Path(_file_path(image))
        if not source.is_file():
            raise UserError("image_missing", f"The image file of '{image.name}' is missing: {source}",
                            "find it again with File > External Data > Find Missing Files, "
                            "or open the right file in the Image Texture node")
        if source.suffix.lower() in BACKEND_READS and not image.is_dirty:
            return Path(shutil.copyfile(source, job_dir / f"{stem}{source.suffix.lower()}"))
    return write_pixels_png(image, job_dir / f"{stem}.png")


def load_variant(path: str, name: str, like=None) -> bpy.types.Image:
    """Read a variant the backend wrote, as a new image treated like the original (colour space)."""
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    if like is not None:  # None when the original was deleted while the job ran
        image.colorspace_settings.name = like.colorspace_settings.name
        image.alpha_mode = like.alpha_mode
    return image


def tiled_copy(image, repeats: int = 3) -> bpy.types.Image:
    """A new image holding `image` repeated repeats x repeats: the seam check done by eye."""
    width, height = image.size
    src = array.array("f", bytes(4 * width * height * 4))
    image.pixels.foreach_get(src)
    row = 4 * width
    band = array.array("f")
    for y in range(height):  # one band of tiled rows, then the band repeated vertically
        band.extend(src[y * row:(y + 1) * row] * repeats)
    name = f"{image.name} {repeats}x{repeats}"
    tiled = bpy.data.images.get(name)
    if tiled is not None and tuple(tiled.size) != (width * repeats, height * repeats):
        bpy.data.images.remove(tiled)
        tiled = None
    if tiled is None:
        tiled = bpy.data.images.new(name, width * repeats, height * repeats, alpha=True,
                                    float_buffer=image.is_float)
    tiled.colorspace_settings.name = image.colorspace_settings.name
    tiled.pixels.foreach_set(band * repeats)
    tiled.update()
    return tiled


def guide_from_edges(image, name: str, side: int = 256) -> bpy.types.Image:
    """A new square image (packed into the .blend) holding the edges of `image`'s centre square, white
    on black, at most `side` pixels: a starting structure guide to paint over."""
    width, height = image.size
    if width == 0 or height == 0:
        raise UserError("image_missing", f"The image '{image.name}' has no pixels",
                        "open the image in the Image Editor to check it, or pick another")
    square = min(width, height)
    side = min(side, square)
    scaled_w, scaled_h = max(side, round(width * side / square)), max(side, round(height * side / square))
    copy = image.copy()
    try:
        copy.scale(scaled_w, scaled_h)
        rgba = array.array("f", bytes(4 * scaled_w * scaled_h * 4))
        copy.pixels.foreach_get(rgba)
    finally:
        bpy.data.images.remove(copy)
    left, top = (scaled_w - side) // 2, (scaled_h - side) // 2
    crop = array.array("f")
    for y in range(top, top + side):  # the backend reads the centre square of a non-square texture
        crop.extend(rgba[4 * (y * scaled_w + left):4 * (y * scaled_w + left + side)])
    lines = edges.edge_lines(edges.luminance(crop, side, side), side, side)
    guide = bpy.data.images.new(name, side, side, alpha=False)
    guide.pixels.foreach_set([v for line in lines for v in (line, line, line, 1.0)])
    guide.update()
    guide.pack()  # a generated image is not saved with the .blend unless packed
    return guide
