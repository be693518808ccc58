"""Make an existing image tile: a photo or scan in, the same texture seamless out, same size.

1. Lighting (`flatten`): a photo's low-frequency illumination (a gradient, vignetting, a shadow)
   makes opposite borders differ in brightness, which no seam repair hides. It is estimated as a
   very wide Gaussian blur of the luminance (sigma from the image's size and its texture scale,
   reflected at the borders: the photo does not wrap yet) and divided out of the colour, so the mean
   colour stays; `auto` does it when the low-frequency difference between opposite borders exceeds
   FLATTEN_THRESHOLD of the mean brightness. Maps: colour maps get the same gain, data maps
   (roughness, height) have their own low frequencies levelled additively, normal maps are left
   alone (their vectors must stay unit length and their statistics valid).
2. Seam repair (weight-free): the image is rolled by half on each tiled axis, so its old borders
   meet in a cross through the middle; a band around each line of the cross is re-made by quilting
   from the image itself (backend/patch/quilting.py's masked SSD and minimum-error cuts): blocks
   stacked along the band, each the window of the image whose edge strips match the pixels on both
   sides of the band and the block before it, closed around the torus; every pixel outside the band
   keeps the (flattened) input's value exactly; the result is rolled back, so the composition sits
   where it was. The band is as wide as a few texture features (BAND_FEATURES x the autocorrelation
   length, at least one lattice period on a regular texture) unless `band` says otherwise.

The repair is a map from output pixel to source pixel (`coords`), so maps follow the colour exactly.
"""

from __future__ import annotations

import json
import threading

import numpy as np
from PIL import Image
from scipy import ndimage

from backend.errors import CancelledError, InputError
from backend.materials.maps import COLOR, NORMAL, MaterialMap, fit_same_area, gather_map
from backend.metrics import autocorrelation, seam_score
from backend.patch import lattice
from backend.patch.quilting import _Correlator, _cut_cost, _new_pixels, layout

TILES = ("both", "x", "y")
FLATTENS = ("auto", "on", "off")
FLATTEN_THRESHOLD = 0.03  # auto flattens when opposite borders differ by more than 3 % in brightness
BAND_FEATURES = 4.0  # the band spans this many autocorrelation lengths
MIN_BAND = 16
STRIP = 0.25  # the share of the band on each side in which the cut from old to new pixels runs


def luminance(arr: np.ndarray) -> np.ndarray:
    """(H, W) from (H, W, C) in 0..1 (Rec. 709 weights for colour)."""
    if arr.shape[2] >= 3:
        return arr[..., 0] * 0.2126 + arr[..., 1] * 0.7152 + arr[..., 2] * 0.0722
    return arr[..., 0]


def feature_length(gray: np.ndarray) -> float:
    """The autocorrelation length: the lag (px) at which the luminance's autocorrelation falls
    below one half, the mean of both axes: the size of the texture's features."""
    acf = autocorrelation(gray.astype(np.float64))
    lengths = []
    for axis_profile in (acf[: gray.shape[0], 0], acf[0, : gray.shape[1]]):
        below = np.nonzero(axis_profile < 0.5)[0]
        lengths.append(float(below[0]) if below.size else float(len(axis_profile)))
    return float(np.mean(lengths))


def illumination(gray: np.ndarray, scale: float) -> np.ndarray:
    """The low-frequency brightness: a Gaussian blur wide against both the image and its features."""
    sigma = max(min(gray.shape) / 6.0, 4.0 * scale)
    return ndimage.gaussian_filter(gray.astype(np.float64), sigma, mode="reflect")


def border_difference(gray: np.ndarray, scale: float | None = None) -> dict[str, float]:
    """Per axis, the low-frequency brightness difference between opposite borders (strips of an
    eighth of the side), over the mean brightness: 0 for an evenly lit texture."""
    low = illumination(gray, feature_length(gray) if scale is None else scale)
    mean = max(float(low.mean()), 1e-6)
    h, w = gray.shape
    sx, sy = max(1, w // 8), max(1, h // 8)
    return {"x": abs(float(low[:, :sx].mean() - low[:, -sx:].mean())) / mean,
            "y": abs(float(low[:sy].mean() - low[-sy:].mean())) / mean}


def band_width(gray: np.ndarray, scale: float, band: int | None, tile: str) -> int:
    h, w = gray.shape
    limit = min(h if tile != "x" else w, w if tile != "y" else h) // 3
    if band is None:
        width = BAND_FEATURES * scale
        found = lattice.detect(gray)
        periods = [p for p in (found.period_y, found.period_x) if p]
        if periods:  # a whole brick or tile in the band, so its joints can continue through it
            width = max(width, 1.5 * max(periods))
        band = int(round(min(max(width, MIN_BAND), limit)))
    if band < 8 or band > limit:
        raise InputError(f"a band of {band} px does not fit a {w}x{h} image: it must be 8 px to a third of the "
                         f"side ({limit} px)", hint="give a smaller --band, or a larger image")
    return band + (band % 2)


def repair(pixels: np.ndarray, tile: str, band: int, regular: bool = False, cancel: threading.Event | None = None):
    """(coords (H, W, 2) into `pixels`, the band mask (H, W)): the seams of `pixels` (H, W, C float)
    re-made by quilting from itself, rolled back to where the input's composition was. On a `regular`
    texture the cuts follow strong edges (mortar, joints), where they hide."""
    h, w = pixels.shape[:2]
    dy, dx = (h // 2 if tile in ("both", "y") else 0), (w // 2 if tile in ("both", "x") else 0)
    ys, xs = np.meshgrid((np.arange(h) - dy) % h, (np.arange(w) - dx) % w, indexing="ij")
    coords = np.stack([ys, xs], axis=2)  # rolled frame: coords[y, x] = input pixel shown there
    made = np.zeros((h, w), bool)
    correlator = _Correlator(pixels)
    if tile in ("both", "x"):
        _band(pixels, coords, made, correlator, band, True, regular, cancel)
    if tile in ("both", "y"):
        _band(pixels, coords, made, correlator, band, False, regular, cancel)
    return np.roll(coords, (-dy, -dx), axis=(0, 1)), np.roll(made, (-dy, -dx), axis=(0, 1))


def _band(pixels, coords, made, correlator, band: int, vertical: bool, regular: bool, cancel) -> None:
    """Re-make the band across the middle of the rolled frame: a column band (vertical) or a row band."""
    if not vertical:  # a row band is a column band of the transposed frame
        t_coords, t_made = coords.transpose(1, 0, 2)[..., ::-1], made.T
        t_pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2))
        _band(t_pixels, t_coords, t_made, _Correlator(t_pixels), band, True, regular, cancel)  # writes through the views
        return
    h, w = coords.shape[:2]
    x0 = w // 2 - band // 2
    strip = max(2, int(round(STRIP * band)))
    rows = layout(h, band, strip, wrap=True)
    # The other axis's wrap line (the middle row of this frame) falls in the middle of a block, never
    # on a cut between two blocks.
    offset = h // 2 - (rows.starts[1] if len(rows.starts) > 1 else h) // 2
    for k, start in enumerate(rows.starts):
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        span = rows.span(k)
        window_rows = (offset + start + np.arange(span)) % h
        current = coords[window_rows][:, x0:x0 + band]
        template = pixels[current[..., 0], current[..., 1]]
        mask = np.zeros((span, band), bool)
        mask[:, :strip] = mask[:, band - strip:] = True  # the pixels on both sides of the band
        sides = {"left": True, "right": True, "top": k > 0, "bottom": k == len(rows.starts) - 1}
        if sides["top"]:
            mask[:strip] = True  # the block before it
        if sides["bottom"]:
            mask[span - strip:] = True  # the first block, around the torus
        cost = correlator.ssd(template, mask)
        sy, sx = np.unravel_index(int(np.argmin(cost)), cost.shape)
        source = np.stack(np.meshgrid(sy + np.arange(span), sx + np.arange(band), indexing="ij"), axis=2)
        take = _new_pixels(_cut_cost(pixels[source[..., 0], source[..., 1]], template, regular), sides, strip)
        block = coords[window_rows, x0:x0 + band]
        block[take] = source[take]
        coords[window_rows, x0:x0 + band] = block
        made_block = made[window_rows, x0:x0 + band]
        made_block |= take
        made[window_rows, x0:x0 + band] = made_block


def flatten_colour(arr: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return np.clip(arr / gain[..., None], 0.0, 1.0)


def _flatten_map(m: MaterialMap, gain: np.ndarray, scale: float) -> MaterialMap:
    """A map levelled like its kind allows (module docstring); the values stay in the map's range."""
    if m.kind == NORMAL:
        return m
    values = m.pixels.astype(np.float64)
    top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(m.pixels.dtype)
    if m.kind == COLOR:
        out = values / gain[..., None]
    else:  # data: its own low frequencies out, its mean kept
        low = np.stack([illumination(values[..., c], scale) for c in range(values.shape[2])], axis=2)
        out = values - low + low.mean(axis=(0, 1), keepdims=True)
    if top is None:
        return MaterialMap(m.name, out.astype(np.float32), m.kind, m.source)
    return MaterialMap(m.name, np.clip(np.round(out), 0, top).astype(m.pixels.dtype), m.kind, m.source)


def make_tileable(image: Image.Image, *, band: int | None = None, flatten: str = "auto", tile: str = "both",
                  maps: dict[str, MaterialMap] | None = None, cancel: threading.Event | None = None) -> Image.Image:
    """The image made tileable (module docstring): same size and mode (8-bit L, RGB or RGBA: alpha is
    carried with its pixels); `info["maps"]` the maps repaired alike, `info["band"]` the re-made
    pixels (mode L, 255 = re-made), `info["parameters"]` the record (band, flatten, seams before and
    after, the share of pixels kept)."""
    if tile not in TILES:
        raise InputError(f"tile must be one of {', '.join(TILES)}, not {tile!r}", hint="e.g. --tile both")
    if flatten not in FLATTENS:
        raise InputError(f"flatten must be one of {', '.join(FLATTENS)}, not {flatten!r}", hint="e.g. --flatten auto")
    mode = image.mode if image.mode in ("L", "RGB", "RGBA") else ("RGBA" if "A" in image.getbands() else "RGB")
    arr = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    colour, alpha = (arr[..., :3], arr[..., 3:]) if mode == "RGBA" else (arr, None)
    gray = luminance(colour)
    scale = feature_length(gray)
    width = band_width(gray, scale, band, tile)
    axes = ("x", "y") if tile == "both" else (tile,)
    before = border_difference(gray, scale)
    flattened = flatten == "on" or (flatten == "auto" and max(before[a] for a in axes) > FLATTEN_THRESHOLD)
    gain = None
    if flattened:
        low = illumination(gray, scale)
        gain = low / max(float(low.mean()), 1e-6)
        colour = flatten_colour(colour, gain)
    maps = {name: fit_same_area(m, *image.size) for name, m in (maps or {}).items()}
    if gain is not None:
        maps = {name: _flatten_map(m, gain, scale) for name, m in maps.items()}
    source = colour if alpha is None else np.concatenate([colour, alpha], axis=2)
    coords, made = repair(source.astype(np.float32), tile, width, lattice.detect(gray).regular, cancel)
    out = source[coords[..., 0], coords[..., 1]]
    result = Image.fromarray(np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8).squeeze(), mode)
    result.info["maps"] = {name: gather_map(m, coords) for name, m in maps.items()}
    result.info["band"] = Image.fromarray((made * 255).astype(np.uint8), "L")
    seams_in, seams_out = seam_score(colour), seam_score(np.asarray(result.convert("L" if mode == "L" else "RGB")))
    record = {"kind": "tileable", "tile": tile, "band": width, "flatten": flattened,
              "border_difference_before": {a: round(before[a], 4) for a in axes},
              "seam_before": {a: round(seams_in[a], 3) for a in axes},
              "seam_after": {a: round(seams_out[a], 3) for a in axes},
              "kept": round(1.0 - float(made.mean()), 4)}
    result.info["parameters"] = json.dumps(record, sort_keys=True)
    return result

