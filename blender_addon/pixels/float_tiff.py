"""Float TIFF files in plain Python: how a float map travels to the backend and is recognised back.

Blender reads 32-bit float TIFFs exactly but writes TIFFs at 8 or 16 bits only, and the backend
reads no OpenEXR; so a float map (an OpenEXR height, a float TIFF) goes to the backend as a
float TIFF written here: one deflate-compressed strip of IEEE float samples, top row first, with
the map's channels (`channels_of`). `holds_float` reads a TIFF's first directory to tell a float
file (the backend's result for a float map) from a 16-bit one: Blender loads both as float images.
"""

from __future__ import annotations

import array
import io
import struct
import sys
import zlib
from pathlib import Path

ORDER = "<" if sys.byteorder == "little" else ">"  # array("f") holds native floats
MAGIC = b"II*\x00" if ORDER == "<" else b"MM\x00*"
SHORT, LONG = 3, 4
DEFLATE, MINISBLACK, RGB, IEEE_FLOAT, UNASSOCIATED_ALPHA = 8, 1, 2, 3, 2
SAMPLE_FORMAT = 339


def channels_of(rgba: array.array) -> int:
    """How many channels an RGBA float buffer really has: 1 (grey: R = G = B, opaque), 3 (opaque)
    or 4. C-speed slice comparisons, no loop per pixel."""
    count = len(rgba) // 4
    opaque = rgba[3::4] == array.array("f", [1.0]) * count
    if opaque and rgba[0::4] == rgba[1::4] == rgba[2::4]:
        return 1
    return 3 if opaque else 4


def _samples(rgba: array.array, width: int, height: int, channels: int) -> bytes:
    """The buffer's first `channels` channels, rows flipped (Blender's rows run bottom to top)."""
    if channels == 4:
        chosen = rgba
    else:
        chosen = array.array("f", bytes(4 * width * height * channels))
        for c in range(channels):
            chosen[c::channels] = rgba[c::4]
    data, row = chosen.tobytes(), 4 * width * channels
    return b"".join(data[y * row:(y + 1) * row] for y in reversed(range(height)))


def write(path: Path, rgba: array.array, width: int, height: int, channels: int) -> Path:
    """Write Blender's RGBA float buffer as a float TIFF with `channels` (1, 3 or 4) channels."""
    strip = zlib.compress(_samples(rgba, width, height, channels), 6)
    strip += b"\x00" * (len(strip) % 2)  # offsets stay even, as the TIFF standard asks
    # Per-sample values of 3-4 channels do not fit in a directory entry: they follow the strip.
    bits_at, formats_at = 8 + len(strip), 8 + len(strip) + 2 * channels
    extra = struct.pack(f"{ORDER}{2 * channels}H", *[32] * channels, *[IEEE_FLOAT] * channels) if channels > 2 else b""
    entries = [(256, LONG, 1, width), (257, LONG, 1, height),
               (258, SHORT, channels, bits_at if extra else 32), (259, SHORT, 1, DEFLATE),
               (262, SHORT, 1, MINISBLACK if channels == 1 else RGB), (273, LONG, 1, 8),
               (277, SHORT, 1, channels), (278, LONG, 1, height), (279, LONG, 1, len(strip)), (284, SHORT, 1, 1),
               *([(338, SHORT, 1, UNASSOCIATED_ALPHA)] if channels == 4 else []),
               (SAMPLE_FORMAT, SHORT, channels, formats_at if extra else IEEE_FLOAT)]
    out = io.BytesIO()
    out.write(MAGIC + struct.pack(f"{ORDER}I", 8 + len(strip) + len(extra)) + strip + extra)
    out.write(struct.pack(f"{ORDER}H", len(entries)))
    for tag, kind, count, value in entries:
        inline = kind == SHORT and count <= 2  # a short value sits in the entry's first two bytes
        out.write(struct.pack(f"{ORDER}HHIHH" if inline else f"{ORDER}HHII", tag, kind, count,
                              *((value, 0) if inline else (value,))))
    out.write(struct.pack(f"{ORDER}I", 0))  # no further directory
    path.write_bytes(out.getvalue())
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
