"""Sketches and edge maps: the pictures sketch guidance reads, in one convention.

A sketch is any image Pillow reads whose lines are drawn on a plain background, either white (or
light) strokes on black or black strokes on white: the background is the majority of the pixels,
so when the median grey is light the sketch is inverted. Engines always see **white lines on
black**, the convention of the edge maps the published LGP and the SD1.5 lineart / scribble /
softedge ControlNets were trained on. A sketch must have the output's aspect (within 1 %; it is
resized to the output size); anything else is refused with a message saying so.

`edge_map` makes such a picture from a texture (Canny edges): train-lgp's targets, and a starting
guide an artist can paint over. Torch-free.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.framing import extent
from backend.images import load_reference

ASPECT_TOLERANCE = 0.01  # relative: a 512x515 scan is still square enough


def white_on_black(gray: Image.Image) -> Image.Image:
    """`gray` ("L") with light lines on a dark background: inverted when the background is light."""
    return Image.eval(gray, lambda v: 255 - v) if float(np.median(np.asarray(gray))) >= 128 else gray


def load_sketch(sketch: str | os.PathLike | Image.Image, size) -> Image.Image:
    """The sketch as an "L" image of the output's `size` (int or (w, h)), white lines on black;
    InputError if unusable."""
    try:
        image = load_reference(sketch).rgb
    except InputError as e:
        raise InputError(f"sketch: {e.message}", hint="pass an image with lines on a plain background "
                         "(white on black or black on white)") from e
    (width, height), (out_w, out_h) = image.size, extent(size)
    if abs((width / height) / (out_w / out_h) - 1.0) > ASPECT_TOLERANCE:
        raise InputError(f"the sketch is {width}x{height} px but the output is {out_w}x{out_h}: their aspects differ",
                         hint="draw the sketch on a canvas of the output's aspect (any size: it is resized to the "
                         "output size)")
    gray = white_on_black(image.convert("L"))
    return gray if gray.size == (out_w, out_h) else gray.resize((out_w, out_h), Image.Resampling.LANCZOS)


def edge_map(image: Image.Image, size: int | None = None, sigma: float = 2.0) -> Image.Image:
    """White-on-black Canny edges of `image` (resized to `size` x `size` first when given)."""
    from skimage.feature import canny

    gray = image.convert("L")
    if size is not None and gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.LANCZOS)
    edges = canny(np.asarray(gray, dtype=np.float32) / 255.0, sigma=sigma)
    return Image.fromarray(edges.astype(np.uint8) * 255, "L")
