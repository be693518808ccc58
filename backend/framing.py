"""How an image is fitted to an output size (W×H): the cover rule every engine, map, mask and sketch
follows (scaled to cover the output, centre-cropped, never squeezed), the square crop, and the n×n
repetition an artist checks seams with. Plain Pillow."""

from __future__ import annotations

from PIL import Image


def extent(size) -> tuple[int, int]:
    """An output size as (width, height): n means n x n."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def cover_box(image_size: tuple[int, int], size) -> tuple[float, float, float, float]:
    """The centred part of an image of `image_size` with the aspect of `size` (w, h): the largest
    such box; the whole image when the aspects agree."""
    (w, h), (out_w, out_h) = image_size, extent(size)

    def centred(whole: int, part: float) -> float:  # a whole number of pixels starts on a pixel, as center_square
        return float((whole - int(part)) // 2) if part.is_integer() else (whole - part) / 2

    if w * out_h > h * out_w:  # wider than the output: the sides are cut
        width = h * out_w / out_h
        left = centred(w, width)
        return (left, 0.0, left + width, float(h))
    height = w * out_h / out_w
    top = centred(h, height)
    return (0.0, top, float(w), top + height)


def cover(image: Image.Image, size, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """The image scaled to cover `size` (int or (w, h)) and centre-cropped to it: how a reference of
    another aspect is presented to an engine (its centre, no squeeze); exactly the image when it has
    the output's size."""
    out = extent(size)
    if image.size == out:
        return image.copy()
    box = cover_box(image.size, out)
    whole = box == (0.0, 0.0, float(image.size[0]), float(image.size[1]))
    return image.resize(out, resample, box=None if whole else box)


def center_square(image: Image.Image, size: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Centre crop to a square and resize to size x size (how non-square references are read)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = image.crop((left, top, left + side, top + side))
    if side == size:
        return crop
    return crop.resize((size, size), resample)


def tiled(image: Image.Image, n: int = 3) -> Image.Image:
    """An n x n repetition of the image: the seam check an artist does by eye."""
    w, h = image.size
    out = Image.new(image.mode, (w * n, h * n))
    for i in range(n):
        for j in range(n):
            out.paste(image, (i * w, j * h))
    return out
