"""Float TIFF files: how a float map travels to the backend and is recognised back.

Blender reads 32-bit float TIFFs exactly but writes TIFFs at 8 or 16 bits only (4.5 and 5.0 offer
no 32-bit TIFF depth), and the backend's declared packages read no OpenEXR (Pillow and tifffile do
not); so a float map (an OpenEXR height, a float TIFF) goes to the backend as a float TIFF written
here, the smallest baseline file: one uncompressed strip of IEEE float samples, top row first,
with the map's channels (`channels_of`); numpy arranges the samples. `holds_float` reads a TIFF's
first directory to tell a float file (the backend's result for a float map) from a 16-bit one:
Blender loads both as float images. The same writer makes the 8-bit TIFF of a huge 8-bit source
downsampled on export (`bits=8`): seconds faster than Blender's PNG encoder at 8192².
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

ORDER = "<" if sys.byteorder == "little" else ">"  # the samples are written as native floats
MAGIC = b"II*\x00" if ORDER == "<" else b"MM\x00*"
SHORT, LONG = 3, 4
# Uncompressed: deflate saves about a tenth of a float map's bytes and costs seconds per 4096² channel.
NO_COMPRESSION, MINISBLACK, RGB, UNSIGNED, IEEE_FLOAT, UNASSOCIATED_ALPHA = 1, 1, 2, 1, 3, 2
SAMPLE_FORMAT = 339


def _rgba(rgba) -> np.ndarray:
    """Blender's flat RGBA float buffer (any buffer or sequence) as (pixels, 4) float32, not copied."""
    return np.asarray(rgba, dtype=np.float32).reshape(-1, 4)


def channels_of(rgba) -> int:
    """How many channels an RGBA float buffer really has: 1 (grey: R = G = B, opaque), 3 (opaque)
    or 4."""
    pixels = _rgba(rgba)
    opaque = bool((pixels[:, 3] == 1.0).all())
    if opaque and (pixels[:, 0] == pixels[:, 1]).all() and (pixels[:, 1] == pixels[:, 2]).all():
        return 1
    return 3 if opaque else 4


def _samples(rgba, width: int, height: int, channels: int, bits: int = 32) -> bytes:
    """The buffer's first `channels` channels, rows flipped (Blender's rows run bottom to top), as
    floats or (`bits` 8) bytes: values in 0-1 rounded to 0-255 (a uint8 buffer: taken as they are)."""
    if getattr(rgba, "dtype", None) == np.uint8:  # 8-bit values already, with their channels (resample.block_mean)
        values = np.asarray(rgba).reshape(height, width, -1)
        if values.shape[2] != channels:
            values = values[:, :, :channels]
        return np.ascontiguousarray(values[::-1]).tobytes()
    samples = _rgba(rgba).reshape(height, width, 4)[::-1, :, :channels]
    if bits == 8:  # in bands of rows: the temporaries stay in the cache (seconds saved at 8192²)
        out = np.empty(samples.shape, np.uint8)
        for start in range(0, height, 32):
            band = samples[start:start + 32] * np.float32(255.0)
            band += np.float32(0.5)
            np.clip(band, 0.0, 255.0, out=band)
            out[start:start + 32] = band  # the cast truncates: with the 0.5 added, rounds
        return out.tobytes()
    return np.ascontiguousarray(samples).tobytes()


def write(path: Path, rgba, width: int, height: int, channels: int, bits: int = 32) -> Path:
    """Write Blender's RGBA float buffer as a TIFF with `channels` (1, 3 or 4) channels: float samples,
    or 8-bit ones when `bits` is 8."""
    if bits not in (8, 32):
        raise ValueError(f"a TIFF of 8 or 32 bits per sample, not {bits}")
    strip = _samples(rgba, width, height, channels, bits)
    sample_format = IEEE_FLOAT if bits == 32 else UNSIGNED
    strip += b"\x00" * (len(strip) % 2)  # offsets stay even, as the TIFF standard asks
    # Per-sample values of 3-4 channels do not fit in a directory entry: they follow the strip.
    bits_at, formats_at = 8 + len(strip), 8 + len(strip) + 2 * channels
    extra = struct.pack(f"{ORDER}{2 * channels}H", *[bits] * channels, *[sample_format] * channels) if channels > 2 else b""
    entries = [(256, LONG, 1, width), (257, LONG, 1, height),
               (258, SHORT, channels, bits_at if extra else bits), (259, SHORT, 1, NO_COMPRESSION),
               (262, SHORT, 1, MINISBLACK if channels == 1 else RGB), (273, LONG, 1, 8),
               (277, SHORT, 1, channels), (278, LONG, 1, height), (279, LONG, 1, len(strip)), (284, SHORT, 1, 1),
               *([(338, SHORT, 1, UNASSOCIATED_ALPHA)] if channels == 4 else []),
               (SAMPLE_FORMAT, SHORT, channels, formats_at if extra else sample_format)]
    directory = [struct.pack(f"{ORDER}H", len(entries))]
    for tag, kind, count, value in entries:
        inline = kind == SHORT and count <= 2  # a short value sits in the entry's first two bytes
        directory.append(struct.pack(f"{ORDER}HHIHH" if inline else f"{ORDER}HHII", tag, kind, count,
                                     *((value, 0) if inline else (value,))))
    directory.append(struct.pack(f"{ORDER}I", 0))  # no further directory
    with open(path, "wb") as f:  # the strip as it is, not copied into one buffer with the rest
        f.write(MAGIC + struct.pack(f"{ORDER}I", 8 + len(strip) + len(extra)))
        f.write(strip)
        f.write(extra + b"".join(directory))
    return path


def holds_float(head) -> bool:
    """Whether the TIFF file (a binary file object at its start) holds IEEE float samples; False for
    anything else, a truncated file too."""
    try:
        magic = head.read(8)
        if magic[:4] not in (b"II*\x00", b"MM\x00*"):
            return False
        order = "<" if magic[:2] == b"II" else ">"
        head.seek(struct.unpack(f"{order}I", magic[4:])[0])
        (count,) = struct.unpack(f"{order}H", head.read(2))
        for _ in range(count):
            tag, kind, n, value = struct.unpack(f"{order}HHI4s", head.read(12))
            if tag == SAMPLE_FORMAT and kind == SHORT:
                if n > 2:  # the values are stored at an offset; the first one says for all
                    head.seek(struct.unpack(f"{order}I", value)[0])
                    value = head.read(2)
                return struct.unpack(f"{order}H", value[:2])[0] == IEEE_FLOAT
    except struct.error:
        return False
    return False
