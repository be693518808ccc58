"""Pictures made for the artist to look at, not to use in the material: the picked variant tiled
3 x 3, Make Tileable's band tinted over its result, a structure guide drawn from the texture's edges,
and the live preview of a running job."""

import os

import bpy
import numpy as np

from ..errors import UserError
from ..pixels import edges
from .texture_io import rgba_pixels

PREVIEW_IMAGE = ".Texture Variants Preview"  # the live preview of a running job

BAND_TINT = np.array([1.0, 0.45, 0.1], np.float32)  # the re-made band, tinted orange over the result


def band_overlay(image, band_path: str, name: str) -> bpy.types.Image:
    """A packed copy of `image` with the pixels its band file marks (white = re-made) tinted: Make
    Tileable's band drawn over the result's thumbnail."""
    band = bpy.data.images.load(band_path, check_existing=False)
    try:
        if tuple(band.size) != tuple(image.size):
            band.scale(*image.size)
        marked = rgba_pixels(band).reshape(-1, 4)[:, 0] > 0.5
    finally:
        bpy.data.images.remove(band)
    rgba = rgba_pixels(image).reshape(-1, 4).copy()
    rgba[marked, :3] = 0.55 * rgba[marked, :3] + 0.45 * BAND_TINT
    overlay = bpy.data.images.new(name, *image.size, alpha=True)
    overlay.colorspace_settings.name = image.colorspace_settings.name
    overlay.pixels.foreach_set(rgba.ravel())
    overlay.pack()
    return overlay


def tiled_copy(image, repeats: int = 3) -> bpy.types.Image:
    """A new image holding `image` repeated repeats x repeats: the seam check done by eye."""
    width, height = image.size
    tiles = np.tile(rgba_pixels(image).reshape(height, width, 4), (repeats, repeats, 1))
    name = f"{image.name} {repeats}x{repeats}"
    tiled = bpy.data.images.get(name)
    if tiled is not None and tuple(tiled.size) != (width * repeats, height * repeats):
        bpy.data.images.remove(tiled)
        tiled = None
    if tiled is None:
        tiled = bpy.data.images.new(name, width * repeats, height * repeats, alpha=True,
                                    float_buffer=image.is_float)
    tiled.colorspace_settings.name = image.colorspace_settings.name
    tiled.pixels.foreach_set(tiles.ravel())
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
        rgba = rgba_pixels(copy).reshape(scaled_h, scaled_w, 4)
    finally:
        bpy.data.images.remove(copy)
    left, top = (scaled_w - side) // 2, (scaled_h - side) // 2
    crop = rgba[top:top + side, left:left + side]  # the backend reads the centre square of a non-square texture
    lines = np.asarray(edges.edge_lines(edges.luminance(crop.ravel(), side, side), side, side), np.float32)
    guide = bpy.data.images.new(name, side, side, alpha=False)
    white_on_black = np.repeat(lines[:, None], 4, axis=1)
    white_on_black[:, 3] = 1.0
    guide.pixels.foreach_set(white_on_black.ravel())
    guide.update()
    guide.pack()  # a generated image is not saved with the .blend unless packed
    return guide


def update_live_preview(job) -> None:
    """Show the engine's latest intermediate image in the panel."""
    if not job.preview or not os.path.isfile(job.preview):
        return
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(job.preview, check_existing=False)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = job.preview
        image.reload()
    image.preview_ensure().reload()
