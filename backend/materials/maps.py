"""The maps of a PBR material beside its base colour: reading, resampling, gathering, writing.

Rules (documented in docs/guide/materials.md):
- a map is read with its raw sample values: no map is colour-managed (no ICC profile, gamma or
  colour conversion is applied), 8-bit stays 8-bit, 16-bit stays 16-bit and float (a 16/32/64-bit
  float TIFF) stays float32, its values kept as they are, outside 0-1 too; 1 to 4 channels;
- its kind follows its name: names with "normal" are normal maps, base_color / albedo / diffuse /
  emission (and similar) are colour maps (sRGB), everything else (roughness, metallic, height,
  displacement, ao, ...) is non-colour data; `colorspace` says which for Blender;
- a map of another size than the base colour is centre-cropped to the target's aspect ratio and
  resized to it, exactly the geometry the base colour gets (`fit`; `resize` stretches the whole
  map instead): Lanczos for colour and data maps on the raw values, clipped to the range (0..top,
  or for a float map each channel's own min..max, so no value leaves the source's range), Lanczos
  on the decoded vectors then re-normalised to unit length for normal maps;
- `gather(map, coords)` rearranges a map through a source-coordinate field exactly, no blending:
  every output pixel is a copy of one input pixel, so normals are translated, never rotated;
- a variant's map is written beside it as `<variant stem>-<name>.png`, with the same parameters
  record (plus a "material_map" text chunk: name, kind, colour space, bits), atomically, never
  over an existing file; 16-bit maps with 2-4 channels, which Pillow cannot write as PNG, and float
  maps are written as `<variant stem>-<name>.tif` (16-bit or 32-bit float TIFF, parameters in the
  image description).
"""

from __future__ import annotations

import io
import json
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.images import MAX_SIDE, open_image, read_header, reduce_factor, save_png_atomic, write_atomic
from backend.params import MAP_NAME as NAME_PATTERN

COLOR, DATA, NORMAL = "color", "data", "normal"
COLOR_NAMES = frozenset({"base_color", "basecolor", "color", "colour", "albedo", "diffuse", "emission",
                         "emission_color", "subsurface_color", "specular_tint", "sheen_tint", "coat_tint"})


def kind_of(name: str) -> str:
    """COLOR, NORMAL or DATA, from a map's name (see the module's rules)."""
    if "normal" in name:
        return NORMAL
    return COLOR if name in COLOR_NAMES else DATA


DTYPES = (np.uint8, np.uint16, np.float32)


@dataclass(frozen=True)
class MaterialMap:
    name: str
    pixels: np.ndarray  # (H, W, C) raw values, C = 1..4: uint8, uint16, or float32 (finite, any range)
    kind: str | None = None  # None: from the name (kind_of)
    source: str = "<array>"

    def __post_init__(self):
        check_name(self.name)
        if self.kind is None:
            object.__setattr__(self, "kind", kind_of(self.name))
        if self.kind not in (COLOR, DATA, NORMAL):
            raise ValueError(f"kind must be {COLOR!r}, {DATA!r} or {NORMAL!r}, not {self.kind!r}")
        arr = self.pixels
        if arr.dtype not in DTYPES or arr.ndim != 3 or not 1 <= arr.shape[2] <= 4:
            raise ValueError(f"map pixels must be (H, W, 1..4) uint8, uint16 or float32, got {arr.shape} {arr.dtype}")
        if self.kind == NORMAL and arr.shape[2] < 3:
            raise InputError(f"normal map {self.source} has {arr.shape[2]} channel(s), a normal map needs RGB",
                             hint="pass a tangent-space normal map (RGB), or use it as height instead")

    @property
    def is_float(self) -> bool:
        return self.pixels.dtype == np.float32

    @property
    def bits(self) -> int:
        return self.pixels.dtype.itemsize * 8

    @property
    def top(self) -> float:
        """The value of white: 255, 65535, or 1.0 for float maps (which may go beyond it)."""
        return 1.0 if self.is_float else 65535 if self.bits == 16 else 255

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def colorspace(self) -> str:
        """The colour space Blender's Image node should use for it."""
        return "sRGB" if self.kind == COLOR else "Non-Color"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(f"map name {name!r} is not usable in a file name",
                         hint="use lower-case letters, digits and _ (e.g. roughness, normal, height)")
    return name


# ------------------------------------------------------------------------------------- reading


def read_map(path: str | os.PathLike, name: str, kind: str | None = None) -> MaterialMap:
    """Read a map file with its raw values (8- or 16-bit PNG/TIFF, float TIFF; 1-4 channels)."""
    check_name(name)
    path = Path(path)
    kind = kind or kind_of(name)
    header = read_header(path, f"{name} map", reducible=True)  # every depth and format, before decoding
    depth, floating = header.bits, header.floating
    own_reader = floating or (depth == 16 and (header.format == "TIFF" or header.channels > 1))
    if own_reader and reduce_factor(header.width, header.height) > 1:  # only Pillow's images are read reduced
        raise InputError(f"{name} map {path} is {header.width}x{header.height} px: larger than {MAX_SIDE} px",
                         hint=f"downscale it to at most {MAX_SIDE} px per side, or save it as an 8-bit PNG")
    if floating or (depth == 16 and header.format == "TIFF"):
        return MaterialMap(name, _channels_last(_read_tiff(path), path), kind, str(path))
    image = open_image(path)
    if depth == 16 and not image.mode.startswith("I"):  # Pillow would keep only each sample's high byte
        return MaterialMap(name, _deep_colour_png(path), kind, str(path))
    return MaterialMap(name, _pixels_of(image, path), kind, str(path))


def _deep_colour_png(path: Path) -> np.ndarray:
    """A 16-bit PNG with colour or alpha channels, every sample as stored (pypng; no gamma, no sBIT
    scaling: raw values like every map)."""
    import png

    try:
        width, height, rows, info = png.Reader(filename=str(path)).read()
        pixels = np.vstack([np.asarray(row, np.uint16) for row in rows])
    except (png.Error, ValueError, zlib.error) as e:
        raise InputError(f"{path} is a 16-bit PNG that could not be read: {e}",
                         hint="save the map again as a PNG or TIFF") from e
    return np.ascontiguousarray(pixels.reshape(height, width, info["planes"]))


def _pixels_of(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image)
        if arr.min() < 0 or arr.max() > 65535:
            raise InputError(f"{path} holds 32-bit integer samples", hint="save the map as 8- or 16-bit")
        return arr.astype(np.uint16)[..., None]
    if mode == "F":
        raise InputError(f"{path} holds floating-point samples in a format other than TIFF",
                         hint="save the map as a 32-bit float TIFF (or an 8- or 16-bit PNG or TIFF)")
    if mode not in ("L", "LA", "RGB", "RGBA"):
        # Palette and 1-bit images hold raw values through their palette; others have no raw RGB.
        image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _channels_last(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    floating = arr.dtype.kind == "f"
    if arr.ndim != 3 or arr.shape[2] > 4 or not (floating or arr.dtype in (np.uint8, np.uint16)):
        raise InputError(f"{path} is a TIFF of shape {arr.shape} ({arr.dtype}), not one 8/16-bit or float image",
                         hint="save the map as a single-page 8-, 16-bit or float TIFF, or a PNG")
    if floating:
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{path} holds NaN or infinite values",
                             hint="replace them (e.g. clamp the map in an image editor) and save it again")
    return np.ascontiguousarray(arr)


def _read_tiff(path: Path) -> np.ndarray:
    """The first page of a TIFF whose header passed the limits (tifffile: every bit of 16-bit and float)."""
    import tifffile

    try:
        return tifffile.imread(path, key=0)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as e:
        raise InputError(f"not a readable TIFF: {path} ({e})", hint="save the map as PNG or TIFF again") from e


# ---------------------------------------------------------------------------------- resampling


def fit(m: MaterialMap, width: int, height: int) -> MaterialMap:
    """The map centre-cropped to the aspect ratio of width x height and resized to it (rules above)."""
    w, h = m.size
    if (w, h) == (width, height):
        return m
    scale = min(w / width, h / height)
    cw, ch = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    return resize(replace(m, pixels=m.pixels[top:top + ch, left:left + cw]), width, height)


def fit_same_area(m: MaterialMap, width: int, height: int) -> MaterialMap:
    """`fit` for a map that must show the same area as its image: the same aspect within 1 %, else
    InputError."""
    (mw, mh) = m.size
    if abs(mw / mh - width / height) > 0.01 * width / height:
        raise InputError(f"map {m.name!r} is {mw}x{mh}, another aspect than the image's {width}x{height}",
                         hint="give the maps of this very image (any resolution of the same area)")
    return fit(m, width, height)


def resize(m: MaterialMap, width: int, height: int) -> MaterialMap:
    """The whole map resized to width x height, stretched when the aspect differs (rules above)."""
    if m.size == (width, height):
        return m
    values = m.pixels.astype(np.float32)
    if m.kind == NORMAL:
        values[..., :3] = values[..., :3] / m.top * 2.0 - 1.0
    out = np.stack([_lanczos(values[..., c], width, height) for c in range(values.shape[2])], axis=2)
    if m.kind == NORMAL:
        vectors = out[..., :3]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=2, keepdims=True), 1e-8)
        out[..., :3] = (vectors + 1.0) * 0.5 * m.top
    if not m.is_float:
        return replace(m, pixels=np.clip(np.rint(out), 0, m.top).astype(m.pixels.dtype))
    if m.kind != NORMAL:  # Lanczos rings past the extremes: keep every channel in its source's range
        out = np.clip(out, m.pixels.min(axis=(0, 1)), m.pixels.max(axis=(0, 1)))
    return replace(m, pixels=np.ascontiguousarray(out, dtype=np.float32))


def _lanczos(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


# ----------------------------------------------------------------------------------- gathering


def gather(pixels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """out[i, j] = pixels[coords[i, j, 0], coords[i, j, 1]]: an exact copy, no blending."""
    coords = np.asarray(coords)
    if coords.ndim != 3 or coords.shape[2] != 2 or not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"coords must be an (H, W, 2) integer array of (y, x), got {coords.shape} {coords.dtype}")
    h, w = pixels.shape[:2]
    ys, xs = coords[..., 0], coords[..., 1]
    if ys.min() < 0 or xs.min() < 0 or ys.max() >= h or xs.max() >= w:
        raise ValueError(f"coords reach outside the {w}x{h} source: y in [{ys.min()}, {ys.max()}], "
                         f"x in [{xs.min()}, {xs.max()}]")
    return pixels[ys, xs]


def gather_map(m: MaterialMap, coords: np.ndarray) -> MaterialMap:
    """The map rearranged like the base colour whose source coordinates are `coords`."""
    return replace(m, pixels=np.ascontiguousarray(gather(m.pixels, coords)))


# ------------------------------------------------------------------------------------- writing


def map_path(variant_path: str | os.PathLike, m: MaterialMap) -> Path:
    """`gravel-patch-s3.png` -> `gravel-patch-s3-roughness.png` (`.tif` for 16-bit colour and float maps)."""
    variant_path = Path(variant_path)
    return variant_path.with_name(f"{variant_path.stem}-{m.name}{_suffix(m)}")


def companions(maps) -> tuple[str, ...]:
    """The file endings a variant's maps add to its stem: pass to images.unique_path."""
    return tuple(f"-{m.name}{_suffix(m)}" for m in maps)


def _suffix(m: MaterialMap) -> str:
    return ".tif" if m.is_float or (m.bits == 16 and m.pixels.shape[2] > 1) else ".png"


def save_map(m: MaterialMap, variant_path: str | os.PathLike, parameters: str | None) -> Path:
    """Write the map beside its variant, atomically; FileExistsError if the name is taken."""
    path = map_path(variant_path, m)
    about = json.dumps({"name": m.name, "kind": m.kind, "colorspace": m.colorspace, "bits": m.bits})
    if path.suffix == ".tif":
        import tifffile

        description = json.dumps({"parameters": parameters, "material_map": json.loads(about)})
        buffer = io.BytesIO()  # tifffile wants a named file or a seekable buffer, not a bare descriptor
        samples = m.pixels[..., 0] if m.pixels.shape[2] == 1 else m.pixels  # one sample per pixel, not a stack
        tifffile.imwrite(buffer, samples, photometric="rgb" if m.pixels.shape[2] >= 3 else "minisblack",
                         extrasamples=("unassalpha",) if m.pixels.shape[2] in (2, 4) else None,
                         compression="zlib", description=description, metadata=None)
        return write_atomic(path, lambda f: f.write(buffer.getvalue()))
    return save_png_atomic(to_image(m), path, parameters=parameters, text={"material_map": about})


def to_image(m: MaterialMap) -> Image.Image:
    """A PIL image of the map's raw values (16-bit single-channel maps as mode I;16)."""
    arr = m.pixels
    if m.is_float:
        raise ValueError("float maps are TIFF files: save them with save_map")
    if m.bits == 16:
        if arr.shape[2] != 1:
            raise ValueError("Pillow has no 16-bit colour mode: save 16-bit colour maps with save_map")
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]))  # uint16 -> mode I;16
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def from_unit(name: str, values: np.ndarray, kind: str | None = None, bits: int = 16,
              source: str = "<derived>") -> MaterialMap:
    """A map from float values in [0, 1], (H, W) or (H, W, C), quantised to 8 or 16 bits."""
    top = 65535 if bits == 16 else 255
    arr = np.clip(np.rint(np.asarray(values, dtype=np.float64) * top), 0, top)
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8)
    return MaterialMap(name, arr[..., None] if arr.ndim == 2 else arr, kind or kind_of(name), source)
