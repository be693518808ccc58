"""Reading reference textures and writing results, with the input policy in one place.

Policy (documented in docs/guide/engines.md, "Input images"):
- any format Pillow reads (PNG, JPEG, TIFF, WebP, BMP, TGA, ...), 8- or 16-bit, paletted,
  grayscale or colour, with or without alpha;
- 16-bit samples are scaled to 8 bits (not clipped);
- grayscale input gives grayscale output; colour engines see it as RGB;
- alpha is kept aside (`Reference.alpha`): engines synthesise RGB, the patch engine may carry alpha;
- every image file read (inputs, material maps of any depth, masks, sketches) is checked from its
  header before anything is decoded, by one reader (`read_header`) against one table of limits
  (`check_header`; docs/PROTOCOL.md "Limits"): each side at most MAX_SIDE, at most MAX_CHANNELS
  samples of at most MAX_BITS bits per pixel; references also need MIN_SIDE on the short side;
- a larger image that Pillow decodes (an 8K-16K scan) is read *reduced*, up to MAX_SOURCE_SIDE a side
  and MAX_DECODED_BYTES decoded: a block mean by the smallest whole factor that brings it within
  MAX_SIDE (`reduce_factor`; the Blender add-on asks for the same size);
- only regular files are opened (a FIFO, device, socket or folder is refused before any read);
- writes are atomic (temporary name in the same folder, then rename) and never replace a file
  unless the caller says so.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from backend.errors import CancelledError, InputError

MIN_SIDE = 32
MAX_SIDE = 8192
MAX_CHANNELS = 4
MAX_BITS = 64  # float64 TIFF maps (read as float32); so at most MAX_SIDE² x 4 x 8 bytes = 2 GiB decoded
MAX_DECODED_BYTES = MAX_SIDE * MAX_SIDE * MAX_CHANNELS * MAX_BITS // 8
MAX_SOURCE_SIDE = 2 * MAX_SIDE  # read reduced by 2 (a 16K scan); its decoded bytes within MAX_DECODED_BYTES
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # by colour type (a palette becomes RGBA at most)
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
READ_TIMEOUT_S = 60.0  # a local texture reads in well under a second; a stuck network mount never does
# Pillow refuses images over twice this many pixels while reading the header (and warns over it); the
# side checks below refuse the rest before decoding.
Image.MAX_IMAGE_PIXELS = MAX_SOURCE_SIDE * MAX_SOURCE_SIDE


@dataclass(frozen=True)
class Reference:
    rgb: Image.Image  # mode "RGB", 8-bit
    alpha: Image.Image | None  # mode "L" or None
    grayscale: bool
    source: str  # path or "<PIL image>", for messages and parameters
    read_from: tuple[int, int] | None = None  # the file's size when it was read reduced (`reduce_factor`)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size

    def record(self) -> dict:
        """Where the reference came from, for a result's parameters (and the size it was read reduced from)."""
        return {"reference": self.source} | ({"reference_read_from": list(self.read_from)} if self.read_from else {})


def to_8bit(image: Image.Image) -> Image.Image:
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


_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _require_regular_file(mode: int, path: Path) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    raise InputError(f"input is {kind}, not an image file: {path}", hint="pass the path of an image file")


def _check_size(w: int, h: int, what: str, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> None:
    if min(w, h) < min_side:
        raise InputError(f"{what} is {w}x{h} px: too small to learn a texture from",
                         hint=f"use an image of at least {MIN_SIDE}x{MIN_SIDE} px")
    if max(w, h) > max_side:
        raise InputError(f"{what} is {w}x{h} px: larger than {MAX_SIDE} px",
                         hint=f"downscale it to at most {MAX_SIDE} px per side")


@dataclass(frozen=True)
class Header:
    """What an image file says it holds, read without decoding a pixel."""

    format: str  # "PNG", "TIFF", or the format Pillow names
    width: int
    height: int
    channels: int
    bits: int  # per sample
    floating: bool

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.channels * max(1, self.bits // 8)


def reduce_factor(width: int, height: int) -> int:
    """The whole factor an image is read reduced by: 1 within MAX_SIDE, else the smallest that fits."""
    return max(1, math.ceil(max(width, height) / MAX_SIDE))


def read_header(path: str | os.PathLike, what: str = "image", reducible: bool = False) -> Header:
    """The header of the image file at `path` (a regular file: see `_open_regular`), checked against
    the limits (`check_header`) before anyone decodes it; InputError when unreadable or over a limit."""
    path = Path(path)
    with _open_regular(path) as f:
        return check_header(_header_of(f, path), path, what, reducible)


def check_header(header: Header, path: Path, what: str, reducible: bool = False) -> Header:
    """The one table of limits for every image file (docs/PROTOCOL.md, "Limits"). `reducible`: the
    caller reads it reduced (`open_image`), so up to MAX_SOURCE_SIDE and MAX_DECODED_BYTES pass."""
    size = f"{header.width}x{header.height} px"
    side = max(header.width, header.height)
    huge = reducible and side <= MAX_SOURCE_SIDE and header.decoded_bytes <= MAX_DECODED_BYTES
    if side > MAX_SIDE and not huge:
        most = f"{MAX_SOURCE_SIDE} px (read reduced)" if reducible else f"{MAX_SIDE} px"
        raise InputError(f"{what} {path} is {size}: larger than {most}",
                         hint=f"downscale it to at most {MAX_SIDE} px per side")
    if min(header.width, header.height) < 1:
        raise InputError(f"{what} {path} is {size}: empty", hint="save the image again")
    if header.channels > MAX_CHANNELS or header.bits > MAX_BITS:
        raise InputError(f"{what} {path} has {header.channels} channel(s) of {header.bits} bits: more than "
                         f"{MAX_CHANNELS} of {MAX_BITS}", hint="save it as an 8- or 16-bit or float32 RGB(A) image")
    return header


def _header_of(f, path: Path) -> Header:
    head = f.read(26)
    f.seek(0)
    try:
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
            width, height, bits, colour = struct.unpack(">IIBB", head[16:26])
            return Header("PNG", width, height, PNG_CHANNELS.get(colour, 4), bits, False)
        if head[:4] in TIFF_SIGNATURES:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:  # by name: tifffile wants one (a regular file, checked)
                page = tif.pages.first
                return Header("TIFF", int(page.imagewidth), int(page.imagelength) * max(1, int(page.imagedepth)),
                              int(page.samplesperpixel), int(page.bitspersample),
                              page.sampleformat == tifffile.SAMPLEFORMAT.IEEEFP)
        with Image.open(f) as im:  # reads the header only
            bits = 32 if im.mode in ("I", "F") else 16 if "16" in im.mode else 8
            return Header(im.format or "?", *im.size, len(im.getbands()), bits, im.mode == "F")
    except Image.DecompressionBombError as e:
        raise InputError(f"image is too large to open safely: {path} ({e})",
                         hint=f"downscale it to at most {MAX_SIDE} px per side") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError, struct.error) as e:
        raise InputError(f"not a readable image: {path} ({e.__class__.__name__}: {e})",
                         hint="use a PNG, JPEG, TIFF or WebP file") from e
    finally:
        f.seek(0)


def _open_regular(path: Path):
    """A binary file object on `path`, which must be a regular file: nothing else is ever read."""
    try:
        _require_regular_file(os.stat(path).st_mode, path)
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open (fstat below refuses it).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(f"input image not found: {path}", hint="check the path and that the file still exists") from None
    except (OSError, UnicodeEncodeError, ValueError) as e:
        raise InputError(f"cannot open the input {path}: {getattr(e, 'strerror', None) or e}",
                         hint="check that the file exists and that you may read it") from None
    f = os.fdopen(fd, "rb")
    try:
        _require_regular_file(os.fstat(fd).st_mode, path)
    except BaseException:
        f.close()
        raise
    return f


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path`, decoded; over MAX_SIDE (up to MAX_SOURCE_SIDE) reduced (`reduced`), with
    `info["read_from"]` its file's size."""
    path = Path(path)
    with _open_regular(path) as f:
        check_header(_header_of(f, path), path, "image", reducible=True)  # the lower bound is the caller's
        try:
            with Image.open(f) as im:
                # what Pillow will decode, whatever the sniffing said
                _check_size(*im.size, f"image {path}", min_side=1, max_side=MAX_SOURCE_SIDE)
                im.load()
                factor = reduce_factor(*im.size)
                if factor > 1:
                    return reduced(im, factor)
                return im.copy() if im.mode != "P" else im.convert("RGBA")
        except Image.DecompressionBombError as e:
            raise InputError(f"image is too large to open safely: {path} ({e})",
                             hint=f"downscale it to at most {MAX_SIDE} px per side") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"not a readable image: {path} ({e.__class__.__name__}: {e})",
                             hint="use a PNG, JPEG, TIFF or WebP file") from e


def reduced(image: Image.Image, factor: int) -> Image.Image:
    """`image` reduced by the whole `factor`: each pixel the mean of a factor x factor block (the last
    width % factor columns and height % factor rows left out, as the add-on's export does)."""
    box, size, mode = (0, 0, image.width // factor * factor, image.height // factor * factor), image.size, image.mode
    if mode == "P":
        image = image.convert("RGBA")
    elif mode in ("1", "I;16", "I;16B", "I;16L", "I;16N"):  # modes Pillow's reduce has no kernel for
        image = image.convert("L" if mode == "1" else "I")
    small = image.reduce(factor, box=box)
    if mode.startswith("I;16"):
        small = small.convert("I;16")  # back to 16 bits, so readers see the depth the file had
    small.info["read_from"] = size
    return small


def read_reference(path: str | os.PathLike, *, cancel: threading.Event | None = None,
                   timeout: float = READ_TIMEOUT_S) -> Reference:
    """load_reference on a thread of its own, so that a read that hangs (a stuck network mount)
    cannot hang the caller: a cancel or the timeout ends the wait and the stuck thread is left behind."""
    box: dict = {}
    done = threading.Event()

    def read() -> None:
        try:
            box["reference"] = load_reference(path)
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=read, name="read-input", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.05):
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        if time.monotonic() > deadline:
            raise InputError(f"reading the input {path} took longer than {timeout:.0f} s",
                             hint="copy the texture to a local disk")
    if "error" in box:
        raise box["error"]
    return box["reference"]


def load_reference(reference: str | os.PathLike | Image.Image) -> Reference:
    """Read and normalise the reference texture; raise InputError with a hint when it is unusable."""
    if isinstance(reference, Reference):  # already read (read_reference)
        return reference
    if isinstance(reference, Image.Image):
        image, source = reference, "<PIL image>"
        if image.mode == "P":
            image = image.convert("RGBA")
    elif isinstance(reference, (str, os.PathLike)):
        image, source = open_image(reference), str(reference)
    else:
        raise InputError(f"reference must be a path or a PIL image, not {type(reference).__name__}",
                         hint="pass a file path or PIL.Image.Image")
    read_from = image.info.get("read_from")
    _check_size(*image.size, f"reference (read reduced from {read_from[0]}x{read_from[1]} px)" if read_from else "reference")
    image = to_8bit(image)
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA") if image.mode != "LA" else image
        alpha_band = rgba.getchannel("A")
        if alpha_band.getextrema() != (255, 255):  # a fully opaque alpha channel is no alpha
            alpha = alpha_band
    grayscale = image.mode in ("L", "LA", "1")
    rgb = image.convert("RGB")
    return Reference(rgb=rgb, alpha=alpha, grayscale=grayscale, source=source,
                     read_from=tuple(read_from) if read_from else None)


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


def unique_path(folder: str | os.PathLike, stem: str, suffix: str = ".png", companions: tuple[str, ...] = (),
                also: tuple[str | os.PathLike, ...] = ()) -> Path:
    """`folder/stem.png`, or `stem-2.png`, `stem-3.png`, ... if taken: outputs never overwrite.

    companions: endings of files written beside it (e.g. "-roughness.png"); a stem is taken when
    any of `stem + ending` exists too, so a result and its companions always share one stem.
    also: more folders the name must be free in (a staging folder's files move on to another).
    """
    folder = Path(folder)
    folders = (folder, *map(Path, also))
    candidate, n = stem, 2
    while any((f / f"{candidate}{ending}").exists() for f in folders for ending in (suffix, *companions)):
        candidate = f"{stem}-{n}"
        n += 1
    return folder / f"{candidate}{suffix}"


def save_png_unique(image: Image.Image, folder: str | os.PathLike, stem: str, companions: tuple[str, ...] = (),
                    also: tuple[str | os.PathLike, ...] = ()) -> Path:
    """save_png_atomic under the first free name of unique_path (with its `companions` and `also`); a
    name taken meanwhile moves on."""
    for _ in range(1000):
        try:
            return save_png_atomic(image, unique_path(folder, stem, companions=companions, also=also))
        except FileExistsError:
            continue
    raise FileExistsError(f"no free file name for {stem} in {folder}")
