"""How big a variant is made, how big the texture goes to the backend, and what the panel says when
either differs from the source. Plain Python.

The backend makes any W×H from `low` to `high` px a side (the diffusion engine: multiples of 8, its
latent grid) and reads images of at most `input_max` px a side as they are (generated/params.json,
from backend/params.py). "Match Source" asks for the source's own W×H, rounded to what the engine takes
and capped at `high` keeping the aspect; "Fixed" asks for a square of the artist's size, made from the
middle of a non-square source (said in the panel). A source larger than `input_max` is downsampled by
the smallest whole factor that brings it within `input_max` (a block mean): by the backend as it reads
the file, when the source has a file the backend reads and is at most `source_max` a side (Blender
then hands over the file's bytes and touches no pixel), else on export (texture_io,
pixels/resample.py). Match Source then asks for that size, so the backend uses it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import parameters

SIZES = parameters.sizes()
LOW, MAX_SIZE, INPUT_MAX, SOURCE_MAX = SIZES["low"], SIZES["high"], SIZES["input_max"], SIZES["source_max"]
MATCH, FIXED = "match", "fixed"


def multiple(engine: str) -> int:
    """The multiple `engine`'s sides must be; "auto" may become diffusion, so it takes diffusion's."""
    return SIZES["multiple"].get(engine, max(SIZES["multiple"].values()))


def _side(value: float, step: int) -> int:
    """`value` rounded to a multiple of `step` within the backend's range."""
    high = MAX_SIZE // step * step
    return min(high, max(math.ceil(LOW / step) * step, round(value / step) * step))


def fit(width: int, height: int, cap: int) -> tuple[int, int]:
    """`width` x `height` scaled down (aspect kept, at least 1 px) so that no side exceeds `cap`."""
    scale = min(1.0, cap / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class SizePlan:
    width: int  # the variant the backend makes, and the add-on keeps
    height: int
    notes: tuple[str, ...] = field(default=())  # what differs from the source, for the panel and the report
    export: tuple[int, int] | None = None  # the size the texture is downsampled to on export; None: as it is

    @property
    def size(self) -> list[int]:
        """The request's `size`: [width, height]."""
        return [self.width, self.height]


def export_factor(source_width: int, source_height: int) -> int:
    """The whole factor a source is downsampled by on export: 1 when the backend reads it as it is."""
    return max(1, math.ceil(max(source_width, source_height) / INPUT_MAX))


def backend_reduces(source_width: int, source_height: int) -> bool:
    """Whether the backend reads a file of this size reduced itself (by `export_factor`)."""
    return max(source_width, source_height) <= SOURCE_MAX


def export_size(source_width: int, source_height: int) -> tuple[int, int] | None:
    """The size a source larger than the backend reads is downsampled to on export, else None."""
    factor = export_factor(source_width, source_height)
    return None if factor == 1 else (source_width // factor, source_height // factor)


def _export_note(source: str, export: tuple[int, int] | None) -> list[str]:
    if export is None:
        return []
    return [f"Downsampled to {export[0]}×{export[1]}: the {source} source is over the backend's "
            f"{INPUT_MAX} px a side"]


def plan(source_width: int, source_height: int, mode: str = MATCH, size: int = SIZES["default"],
         engine: str = "auto") -> SizePlan:
    """The size of the variants for a `source_width` x `source_height` source made by `engine`."""
    source_width, source_height = max(1, int(source_width)), max(1, int(source_height))
    source, step = f"{source_width}×{source_height}", multiple(engine)
    export = export_size(source_width, source_height)
    notes = _export_note(source, export)
    if mode == FIXED:
        # The size is the artist's choice; only a change of aspect needs saying.
        side = _side(size, step)
        if source_width != source_height:
            notes.append(f"Square {side}×{side} from a {source} source: the aspect differs "
                         "(Size: Match Source keeps it)")
        return SizePlan(side, side, tuple(notes), export)
    # A huge source is asked for at the size it is exported at: one resample, on export.
    wanted = export or fit(source_width, source_height, MAX_SIZE)
    width, height = _side(wanted[0], step), _side(wanted[1], step)
    if export is None and wanted != (source_width, source_height):
        notes.append(f"Capped at {MAX_SIZE} px: {width}×{height} from a {source} source")
    elif (width, height) != wanted:
        why = f"multiples of {step}, the diffusion engine's grid" if step > 1 else f"at least {LOW} px"
        notes.append(f"{width}×{height} ({why}), the source is {wanted[0]}×{wanted[1]}")
    if abs(width / height - source_width / source_height) > 0.01 * source_width / source_height:
        notes.append(f"The aspect changes slightly: {width}:{height} for {source_width}:{source_height}")
    return SizePlan(width, height, tuple(notes), export)


def result_notes(source_size: tuple[int, int], result_size: tuple[int, int]) -> list[str]:
    """What the panel says about a finished variant whose size or aspect is not the source's."""
    (sw, sh), (rw, rh) = source_size, result_size
    if (sw, sh) == (rw, rh) or not (sw and sh and rw and rh):
        return []
    if abs(rw / rh - sw / sh) > 0.01 * sw / sh:
        return [f"Result {rw}×{rh} has another aspect than the source ({sw}×{sh})"]
    return [f"Result {rw}×{rh}, the source is {sw}×{sh}"]


def size_plan(settings, image, engine: str | None = None) -> SizePlan:
    """The plan for an image (anything with `.size`) under the panel's settings (`size_mode`, `size`,
    `engine`; `engine`: the one that will run, when known, e.g. "auto" resolved by the backend)."""
    return plan(image.size[0], image.size[1], settings.size_mode, settings.size, engine or settings.engine)


def own_size(width: int, height: int) -> SizePlan:
    """The plan of a job that keeps the source's own size (Make Tileable, tile sets, Add Missing Maps),
    downsampled on export only when the backend could not read it."""
    export = export_size(width, height)
    if export is None:
        return SizePlan(width, height)
    return SizePlan(*export, tuple(_export_note(f"{width}×{height}", export)), export)
