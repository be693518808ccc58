"""Reading reference textures and writing results, with the input policy in one place.

Policy (documented in the README):
- any format Pillow reads (PNG, JPEG, TIFF, WebP, BMP, TGA, ...), 8- or 16-bit, paletted,
  grayscale or colour, with or without alpha;
- 16-bit samples are scaled to 8 bits (not clipped);
- grayscale input gives grayscale output; colour engines see it as RGB;
- alpha is kept aside (`Reference.alpha`): engines synthesise RGB, the patch engine may carry alpha;
- the short side must be at least MIN_SIDE pixels, the long side at most MAX_SIDE;
- writes are atomic (temporary name in the same folder, then rename) and never replace a file
  unless the caller says so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from backend.errors import InputError

MIN_SIDE = 32
MAX_SIDE = 8192


@dataclass(frozen=True)
class Reference:
    rgb: Image.Image  # mode "RGB", 8-bit
    alpha: Image.Image | None  # mode "L" or None
    grayscale: bool
    source: str  # path or "<PIL image>", for messages and parameters

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float modes scaled to 8 bits; everything else left to Pillow's convert."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else arr.max()
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return image


def open_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input image not found: {path}", hint="check the path; relative paths are resolved from the current folder")
    if path.is_dir():
        raise InputError(f"input is a folder, not an image: {path}", hint="pass the path of an image file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy() if im.mode != "P" else im.convert("RGBA")
    except Image.DecompressionBombError as e:
        raise InputError(f"image is too large to open safely: {path} ({e})",
                         hint=f"downscale it to at most {MAX_SIDE} px per side") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"not a readable image: {path} ({e.__class__.__name__}: {e})",
                         hint="use a PNG, JPEG, TIFF or WebP file") from e


def load_reference(reference: str | os.PathLike | Image.Image) -> Reference:
    """Read and normalise the reference texture; raise InputError with a hint when it is unusable."""
    if isinstance(reference, Image.Image):
        image, source = reference, "<PIL image>"
        if image.mode == "P":
            image = image.convert("RGBA")
    elif isinstance(reference, (str, os.PathLike)):
        image, source = open_image(reference), str(reference)
    else:
        raise InputError(f"reference must be a path or a PIL image, not {type(reference).__name__}",
                         hint="pass a file path or PIL.Image.Image")
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise InputError(f"reference is {w}x{h} px: too small to learn a texture from",
                         hint=f"use an image of at least {MIN_SIDE}x{MIN_SIDE} px")
    if max(w, h) > MAX_SIDE:
        raise InputError(f"reference is {w}x{h} px: larger than {MAX_SIDE} px",
                         hint=f"downscale it to at most {MAX_SIDE} px per side")

    image = _to_8bit(image)
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA") if image.mode != "LA" else image
        alpha_band = rgba.getchannel("A")
        if alpha_band.getextrema() != (255, 255):  # a fully opaque alpha channel is no alpha
            alpha = alpha_band
    grayscale = image.mode in ("L", "LA", "1")
    rgb = image.convert("RGB")
    return Reference(rgb=rgb, alpha=alpha, grayscale=grayscale, source=source)


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square and resize to size x size (how non-square references are read)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = image.crop((left, top, left + side, top + side))
    if side == size:
        return crop
    return crop.resize((size, size), Image.Resampling.LANCZOS)


def tiled(image: Image.Image, n: int = 3) -> Image.Image:
    """An n x n repetition of the image: the seam check an artist does by eye."""
    w, h = image.size
    out = Image.new(image.mode, (w * n, h * n))
    for i in range(n):
        for j in range(n):
            out.paste(image, (i * w, j * h))
    return out


def save_png_atomic(image: Image.Image, path: str | os.PathLike, *, parameters: str | None = None,
                    overwrite: bool = False, text: dict[str, str] | None = None) -> Path:
    """Write a PNG so that no reader ever sees half a file; never replaces a file unless asked.

    `text`: further PNG text chunks beside "parameters". Mode I;16 images are written as 16-bit.
    """
    info = PngImagePlugin.PngInfo()
    chunks = {"parameters": parameters if parameters is not None else image.info.get("parameters")}
    chunks.update(text or {})
    for key, value in chunks.items():
        if value:
            info.add_text(key, value)
    return write_atomic(path, lambda f: image.save(f, format="PNG", pnginfo=info), overwrite=overwrite)


def write_atomic(path: str | os.PathLike, write, *, overwrite: bool = False) -> Path:
    """Call write(binary file) on a temporary file in the same folder, then move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; give the result the permissions of a normally created file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name appeared meanwhile: no silent overwrite even under races.
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def unique_path(folder: str | os.PathLike, stem: str, suffix: str = ".png", companions: tuple[str, ...] = ()) -> Path:
    """`folder/stem.png`, or `stem-2.png`, `stem-3.png`, ... if taken: outputs never overwrite.

    companions: endings of files written beside it (e.g. "-roughness.png"); a stem is taken when
    any of `stem + ending` exists too, so a result and its companions always share one stem.
    """
    folder = Path(folder)
    candidate, n = stem, 2
    while any((folder / f"{candidate}{ending}").exists() for ending in (suffix, *companions)):
        candidate = f"{stem}-{n}"
        n += 1
    return folder / f"{candidate}{suffix}"
