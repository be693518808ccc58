"""Restyle masks: what a mask image or a set of points means, checked against the input (torch-free).

The rule (docs/guide/restyle-and-sketch.md, "Restyle"):
- a mask image is white where selected (grey: partly), read by its luminance (alpha ignored), 8- or
  16-bit, any size with the input's aspect ratio (within 1 %);
- it is scaled to the input's size, then cropped like the input: the centred part with the
  output's aspect (backend.framing.cover), resized to the output size, so mask and texture line up; masks
  are resampled by area averaging when shrinking and bilinearly when enlarging (no ringing: a
  black area stays exactly black, a white one exactly white);
- points and boxes are pixel coordinates of the input image (x to the right, y down, from the
  top-left corner) and must lie inside it;
- a mask that selects nothing (no pixel at least half white) is refused.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.framing import cover, extent
from backend.images import open_image, to_8bit

ASPECT_TOLERANCE = 0.01
SELECTED = 0.5  # a pixel at least this white counts as selected


def read_mask(path: str | os.PathLike) -> Image.Image:
    """The mask image at `path` as 8-bit luminance ("L")."""
    if not os.path.isfile(path):
        raise InputError(f"mask image not found (or not a regular file): {path}",
                         hint="check the path of the mask image (white = selected)")
    try:
        image = open_image(path)
    except InputError as e:
        raise InputError(f"mask: {e.message}", hint="pass a mask image (PNG, JPEG, ...): white where selected, "
                         "black elsewhere") from e
    image = to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGB")  # luminance only: a painted mask's alpha says nothing about the selection
    return image.convert("L")


def fit_mask(mask: Image.Image, input_size: tuple[int, int], size) -> np.ndarray:
    """The mask over the output of `size` (int or (w, h)): (h, w) float32 in [0, 1], read like an input
    of `input_size`."""
    (w, h), (mw, mh) = input_size, mask.size
    if abs((mw / mh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
        raise InputError(f"the mask is {mw}x{mh} px but the input is {w}x{h} px: their aspect ratios differ",
                         hint="paint the mask over the input image itself (any resolution with the same aspect "
                         "ratio), or crop it to the input's shape")
    if (mw, mh) != (w, h):
        mask = mask.resize((w, h), _resampling(mw, w))
    out_w, out_h = extent(size)
    scale = max(out_w / w, out_h / h)
    fitted = np.asarray(cover(mask.convert("L"), (out_w, out_h), _resampling(1.0, scale)), dtype=np.float32)
    return np.clip(fitted / 255.0, 0.0, 1.0)


def _resampling(source: int, target: int):
    return Image.Resampling.BOX if target < source else Image.Resampling.BILINEAR


def require_selection(mask: np.ndarray, sam: bool = False) -> None:
    """Refuse a fitted mask that selects nothing."""
    if (mask >= SELECTED).any():
        return
    if sam:
        raise InputError("Segment Anything selected nothing for these points inside the part the output covers",
                         hint="place the points on the part to select (label 1), fewer excluding points, or "
                         "paint a mask instead")
    raise InputError("the mask selects nothing (it is black, or nearly, everywhere the output covers)",
                     hint="paint white where the texture should change (edit-inside) or keep its structure "
                     "(keep-structure); an input of another aspect than the output's is centre-cropped to it, "
                     "so paint inside that part")


def check_prompts(points, box, input_size: tuple[int, int]) -> None:
    """Points ((x, y, label), ...) and a box (x0, y0, x1, y1) must lie inside the input image, and
    something must be selected: a point with label 1, or a box."""
    w, h = input_size
    for x, y, _ in points or ():
        if not (0 <= x < w and 0 <= y < h):
            raise InputError(f"mask point ({x:g}, {y:g}) is outside the {w}x{h} px input image",
                             hint=f"give pixel coordinates of the input: x from 0 to {w - 1}, y from 0 to {h - 1}, "
                             "from the top-left corner")
    if box is not None and not (0 <= box[0] and 0 <= box[1] and box[2] <= w and box[3] <= h):
        raise InputError(f"mask box {list(box)} reaches outside the {w}x{h} px input image",
                         hint=f"keep the box within 0..{w} x 0..{h} (pixels, from the top-left corner)")
    if box is None and not any(label == 1 for *_, label in points or ()):
        raise InputError("the mask points only exclude (label 0): nothing is selected",
                         hint="add at least one point with label 1 on what should be selected, or a box")


def mask_image(mask: np.ndarray) -> Image.Image:
    """The mask as an 8-bit image (white = selected), e.g. to write beside a result."""
    return Image.fromarray(np.round(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
