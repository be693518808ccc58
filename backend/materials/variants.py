"""A variant's material maps: the given maps rearranged like its base colour, and the derived ones.

- given maps (`params.maps`) are read and fitted to the reference's size before anything is
  generated (maps.read_map, maps.fit), then put through the engine's own scale and crop
  (`engine.scale_map`), so they line up with the reference the engine saw; with `params.map_size`
  (the reference is a squeezed copy of a texture that size) they are stretched to the reference's
  size instead of centre-cropped (maps.resize), and every map of a variant, derived ones too, is
  written stretched to `map_size` (normal maps re-normalised: the backend resamples them, not
  Blender, which cannot re-normalise);
- when the engine says where every pixel came from (`image.info["source_coords"]`, the patch
  engine), every map is gathered through those coordinates: the relations between the maps hold
  exactly; otherwise (the diffusion engine) the coordinates are a wrap-around correspondence from
  the variant back to the scaled reference (correspondence.correspond), and its fidelity goes into
  the variant's parameters record;
- derived maps (`params.derive`) are computed from each VARIANT's base colour, not derived from the
  reference and gathered: they then match the variant's colour exactly (no correspondence error)
  and are exactly tileable, since every filter of derive.py wraps around.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from backend.errors import CancelledError, InputError
from backend.materials import correspondence, derive
from backend.materials.maps import MaterialMap, companions, fit, gather_map, read_map, resize, save_map

log = logging.getLogger(__name__)


def load(params, reference_size: tuple[int, int]) -> dict[str, MaterialMap]:
    """The given maps, read and fitted (with `map_size`: stretched) to the reference's size; InputError
    for a bad one."""
    w, h = reference_size
    to_reference = fit if params.map_size is None else resize
    out = {}
    for name, path in params.maps.items():
        try:
            out[name] = to_reference(read_map(path, name), w, h)
        except InputError as e:
            raise InputError(f"map {name!r}: {e.message}", hint=e.hint) from e
    return out


def wanted(params) -> bool:
    return bool(params.maps or params.derive)


def follow(engine, reference, params, image: Image.Image, given: dict[str, MaterialMap], seed: int,
           cancel=None) -> tuple[dict[str, MaterialMap], dict]:
    """(the variant's maps by name, what its parameters record gains)."""
    if cancel is not None and cancel.is_set():
        raise CancelledError()
    coords = image.info.pop("source_coords", None)
    record: dict = {}
    out: dict[str, MaterialMap] = {}
    if given:
        if coords is None:
            start = time.perf_counter()
            found = correspondence.correspond(image, engine.scaled_reference(reference, params), seed=seed)
            coords = found.coords
            record |= found.fidelity() | {"correspondence_seconds": round(time.perf_counter() - start, 3)}
        for name, m in given.items():
            out[name] = gather_map(engine.scale_map(m, reference.size, params), coords)
    if params.derive:
        colour = np.asarray(image.convert("L" if image.mode in ("L", "LA") else "RGB"))
        out |= derive.derive(colour, params.derive, normals=_normals(params, seed))
    if params.map_size is not None:
        out = {name: resize(m, *params.map_size) for name, m in out.items()}
    return out, record


def _normals(params, seed: int):
    """Marigold's normals when asked for (ModelsMissingError when its weights are absent), else None."""
    if params.normals != "marigold":
        return None
    import torch

    from backend.materials import marigold

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = marigold.load_normals(device=device, dtype="float16" if device == "cuda" else "float32")
    return lambda colour: marigold.predict_normals(colour, pipe, seed=seed)


def endings(image: Image.Image) -> tuple[str, ...]:
    """The file endings the image's maps add to its stem (for images.unique_path)."""
    return companions(image.info.get("maps", {}).values())


def save(image: Image.Image, variant_path) -> dict[str, str]:
    """Write the image's maps beside `variant_path` with its parameters record: {name: path}.
    On failure the maps written so far are removed again."""
    written: dict[str, str] = {}
    try:
        for name, m in image.info.get("maps", {}).items():
            written[name] = str(save_map(m, variant_path, image.info.get("parameters")))
    except BaseException:
        remove(written.values())
        raise
    return written


def remove(paths) -> None:
    from pathlib import Path

    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", path)
