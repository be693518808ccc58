"""How big a variant is made, and what the panel says when it differs from the source. Plain Python.

The backend makes square images whose side is a multiple of STEP (64, at most MAX_SIZE, 2048: its
declared size, backend/params.py). To keep a
non-square source's aspect, "Match Source" sends the backend a square copy of the source squeezed
to `side` x `side` and stretches the square variant back to `width` x `height`: the texture's
features keep their proportions, the backend still sees a square. A fixed size makes a square
variant (the artist's choice), cropped from the middle of a non-square source (said in the panel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import parameters

STEP, MAX_SIZE = parameters.square_size()["multiple"], parameters.square_size()["high"]
MATCH, FIXED = "match", "fixed"


def _multiple(value: float) -> int:
    return max(STEP, round(value / STEP) * STEP)


@dataclass(frozen=True)
class SizePlan:
    side: int  # the square the backend makes
    width: int  # the variant the add-on keeps
    height: int
    notes: tuple[str, ...] = field(default=())  # what differs from the source, for the panel and the report

    @property
    def squeezed(self) -> bool:
        """True when the reference goes to the backend squeezed to a square (and comes back stretched)."""
        return (self.width, self.height) != (self.side, self.side)


def plan(source_width: int, source_height: int, mode: str = MATCH, size: int = parameters.square_size()["default"],
         cap: int = MAX_SIZE) -> SizePlan:
    """The size of the variants for a `source_width` x `source_height` source."""
    source_width, source_height = max(1, int(source_width)), max(1, int(source_height))
    source = f"{source_width}×{source_height}"
    if mode == FIXED:
        # The size is the artist's choice; only a change of aspect needs saying.
        side = min(cap, _multiple(size))
        notes = []
        if source_width != source_height:
            notes.append(f"Square {side}×{side} from a {source} source: the aspect differs "
                         "(Size: Match Source keeps it)")
        return SizePlan(side, side, side, tuple(notes))
    longest = max(source_width, source_height)
    scale = min(1.0, cap / longest)
    width, height = _multiple(source_width * scale), _multiple(source_height * scale)
    width, height = min(width, cap), min(height, cap)
    notes = []
    if scale < 1.0:
        notes.append(f"Capped at {cap} px: {width}×{height} from a {source} source")
    elif (width, height) != (source_width, source_height):
        notes.append(f"{width}×{height} (multiples of {STEP}), the source is {source}")
    if abs(width / height - source_width / source_height) > 0.01 * source_width / source_height:
        notes.append(f"The aspect changes slightly: {width}:{height} for {source_width}:{source_height}")
    return SizePlan(max(width, height), width, height, tuple(notes))


def result_notes(source_size: tuple[int, int], result_size: tuple[int, int]) -> list[str]:
    """What the panel says about a finished variant whose size or aspect is not the source's."""
    (sw, sh), (rw, rh) = source_size, result_size
    if (sw, sh) == (rw, rh) or not (sw and sh and rw and rh):
        return []
    if abs(rw / rh - sw / sh) > 0.01 * sw / sh:
        return [f"Result {rw}×{rh} has another aspect than the source ({sw}×{sh})"]
    return [f"Result {rw}×{rh}, the source is {sw}×{sh}"]


def size_plan(settings, image) -> SizePlan:
    """The plan for an image (anything with `.size`) under the panel's settings (`size_mode`, `size`)."""
    return plan(image.size[0], image.size[1], settings.size_mode, settings.size)
