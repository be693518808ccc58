"""Which settings of the Variants panel matter for the chosen engine and appearance mode, and which
engine "Auto" will use. Plain Python (no bpy), so the rules are tested without drawing.

Auto is decided by the backend (diffusion when its models resolve to files on this machine, else
patch); the add-on knows that answer only from the backend's `hello` (`engines.diffusion.available`,
a file check that imports no torch), kept from the last Check Backend or job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

SHOWN, INACTIVE, HIDDEN = "shown", "inactive", "hidden"

# Settings only the diffusion engine reads (the patch engine ignores them).
DIFFUSION_ONLY = ("steps", "appearance", "style_only", "suppress_content", "prompt", "negative_prompt", "sketch",
                  "sketch_mode", "sketch_strength", "sampler")


def auto_engine(hello: Mapping | None) -> str | None:
    """The engine "auto" resolves to on the running backend, or None when no hello says."""
    engines = (hello or {}).get("engines")
    diffusion = engines.get("diffusion") if isinstance(engines, Mapping) else None
    if not isinstance(diffusion, Mapping):
        return None
    return "diffusion" if diffusion.get("available") else "patch"


def auto_text(hello: Mapping | None) -> str:
    """The line under the Engine setting when it is Auto."""
    engine = auto_engine(hello)
    if engine == "diffusion":
        return "Auto uses Diffusion: its models are on this machine"
    if engine == "patch":
        return "Auto uses Patch: the diffusion models were not found"
    return "Auto uses Patch unless the diffusion models are found (Check Backend tells)"


PATCH_HINT = ("Patch suits irregular materials; bricks, tiles and planks are detected and kept whole "
              "(each result says what was found)")


def patch_expectation(parameters: Mapping) -> str:
    """What the patch engine found in the texture and what to expect of its variants, in an artist's
    words, from a result's parameters record (empty for other engines or records without it)."""
    if parameters.get("engine") != "patch" or not parameters.get("patch_structure"):
        return ""
    if parameters["patch_structure"] == "regular":
        sizes = [f"{round(p)} px" for p in parameters.get("patch_period") or () if p]
        every = f" repeating every {' × '.join(sizes)}" if sizes else ""
        return (f"Found a pattern of bricks, tiles or planks{every}: rows and joints are kept whole "
                "(the pattern may be rescaled slightly to fit)")
    return ("Found an irregular texture: pieces of it in new arrangements (for bricks, tiles or planks "
            "the Diffusion engine keeps the pattern better)")


def balance_words(balance: float, engine: str | None) -> str:
    """What the Structure ⟷ Appearance slider's value does, in words."""
    if engine == "patch":
        return ("Small pieces: new structure, more seams between pieces" if balance < 0.34 else
                "Large pieces: close to the original, fewer seams" if balance > 0.66 else
                "Medium pieces: a new arrangement that keeps the texture's features")
    return ("New structure: the look may drift from the original" if balance < 0.34 else
            "The original's look, held closely: the structure moves less" if balance > 0.66 else
            "A new structure in the original's look")


SORT_KEYS = {  # sort_results: (what the card gives, best first when ascending)
    "novelty": (lambda card: -card.get("novelty", 0.0)),
    "look": (lambda card: card.get("look", math.inf)),
    "seam": (lambda card: max(card.get("seam", {}).values(), default=math.inf)),
}


def card_marks(card: Mapping) -> str:
    """A variant's report card in three marks for its thumbnail: tiles, new, same look (✓ or ✗; empty
    for a result without a card)."""
    if not card or "tiles" not in card:
        return ""
    marks = [("T", card.get("tiles")), ("N", card.get("new")), ("L", card.get("same_look"))]
    return " ".join(f"{'✓' if ok else '✗'}{letter}" for letter, ok in marks if ok is not None)


def card_details(card: Mapping) -> str:
    """The card in words, with its numbers, for the picked variant."""
    if not card or "tiles" not in card:
        return ""
    seams = ", ".join(f"{axis} {value:.2f}" for axis, value in sorted(card.get("seam", {}).items()))
    parts = [f"{'Tiles' if card['tiles'] else 'Does not tile'} (seam {seams}; 1 = seamless)"]
    if "novelty" in card:
        parts.append(f"{'new' if card.get('new') else 'close to a shifted copy'} (novelty {card['novelty']:.2f})")
    if "look" in card:
        parts.append(f"{'same look' if card.get('same_look') else 'another look'} (look {card['look']:.2f}; "
                     "≤ 1 = as close as the source to itself)")
    if "clip" in card:
        parts.append(f"CLIP {card['clip']:.2f}")
    if card.get("remake_full"):
        parts.append("made at Fast and its look does not match the source: make it again with Quality: Full")
    return "; ".join(parts)


def fast_look_warning(cards: list[Mapping]) -> str:
    """The result set's warning when Fast (few-step) variants fail the card's look verdict (the backend
    sets `remake_full` on a Fast variant's card exactly then); empty when none does."""
    failed = sum(1 for card in cards if card.get("remake_full"))
    if not failed:
        return ""
    which = "the variant" if len(cards) == 1 else f"{failed} of {len(cards)} variants"
    return (f"Quality: Fast lost the source's look in {which} (report card): make "
            f"{'it' if failed == 1 else 'them'} again with Quality: Full")


def result_summary(parameters: Mapping) -> str:
    """What kind of result set a parameters record is, with its key settings, for a History row:
    "restyle 'mossy bricks' · strength 0.50", "guided diffusion variants (lgp 1.5) · balance 0.50 · kv"."""
    kind = parameters.get("kind")
    if kind == "tileable":
        return "tileable (the texture itself)"
    if kind == "layout":
        cells = "×".join(str(c) for c in parameters.get("cells", ()))
        return f"tile set layout {cells}".rstrip()
    if parameters.get("upscale_factor"):  # the backend's upscale record
        return f"upscale ×{parameters['upscale_factor']}"
    if parameters.get("restyle_prompt"):
        strength = parameters.get("restyle_strength")
        return f"restyle '{parameters['restyle_prompt']}'" + (f" · strength {strength:.2f}" if strength is not None
                                                               else "")
    engine = parameters.get("engine", "")
    guided = f"guided {engine} variants ({parameters.get('sketch_mode', '')} {parameters.get('sketch_strength', '')})" \
        if parameters.get("sketch") else f"{engine} variants"
    parts = [guided.replace(" )", ")")]
    if "balance" in parameters:
        parts.append(f"balance {float(parameters['balance']):.2f}")
    if engine == "diffusion" and parameters.get("appearance"):
        parts.append(str(parameters["appearance"]))
    if engine == "diffusion" and parameters.get("sampler") == "fast":
        parts.append(f"fast, {parameters.get('fast_steps', '?')} steps")
    if parameters.get("prompt"):
        parts.append(f"'{parameters['prompt']}'")
    return " · ".join(parts)


def tileable_summary(parameters: Mapping) -> str:
    """What Make Tileable did, from its result's parameters record (empty for other results): the seam
    scores before and after per axis (about 1 = seamless), the share of pixels kept, the lighting."""
    if parameters.get("kind") != "tileable":
        return ""
    before, after = parameters.get("seam_before", {}), parameters.get("seam_after", {})
    seams = ", ".join(f"{axis} {before[axis]:.1f} → {after[axis]:.2f}" for axis in sorted(after) if axis in before)
    kept = parameters.get("kept")
    lighting = "lighting levelled" if parameters.get("flatten") else "lighting kept"
    return (f"Seam {seams} (1 = seamless); {100 * kept:.0f} % of the pixels kept; {lighting}"
            if kept is not None else f"Seam {seams}; {lighting}")


def effective_engine(engine: str, hello: Mapping | None) -> str | None:
    """The engine a job will run on, or None when Auto and the backend has not said."""
    return auto_engine(hello) if engine == "auto" else engine


def setting_states(engine: str | None, appearance: str, style_only: bool, sketch: bool = False,
                   size_mode: str = "fixed", sampler: str = "full") -> dict[str, str]:
    """SHOWN, INACTIVE (drawn greyed out) or HIDDEN for each setting that depends on the others.

    `engine` is the effective one (None: not known yet, so every diffusion setting may apply).
    """
    size = {"size": HIDDEN if size_mode == "match" else SHOWN}  # Match Source takes the source's size
    if engine == "patch":
        # The patch engine reads the balance as its block size; the diffusion settings mean nothing.
        return dict.fromkeys(DIFFUSION_ONLY, HIDDEN) | {"balance": SHOWN} | size
    states = dict.fromkeys(DIFFUSION_ONLY, SHOWN) | size
    if not style_only:
        states["suppress_content"] = INACTIVE  # the content text goes with Style Only, and only then
    if not sketch:
        states["sketch_mode"] = states["sketch_strength"] = HIDDEN  # they appear with a guide image
    if sampler == "fast":
        states["steps"] = INACTIVE  # the fast sampler takes its LoRA's few steps
    # On diffusion the balance sets the kv-replacement window: with appearance "none" there is none
    # (while Auto is undecided it may still become the patch engine's block size).
    states["balance"] = INACTIVE if appearance == "none" and engine == "diffusion" else SHOWN
    return states


def restyle_states(hello: Mapping | None, mask_source: str) -> dict[str, str]:
    """The Restyle section: the mask mode means something only with a mask; the image and point
    controls only for their source. Restyle always runs on the diffusion engine."""
    return {"mask_mode": HIDDEN if mask_source == "none" else SHOWN,
            "mask_image": SHOWN if mask_source == "image" else HIDDEN,
            "mask_points": SHOWN if mask_source == "points" else HIDDEN,
            "restyle": INACTIVE if auto_engine(hello) == "patch" else SHOWN}


def restyle_note(hello: Mapping | None) -> str | None:
    """Why Restyle cannot run here, when the backend has said so."""
    if auto_engine(hello) == "patch":
        return "Restyle needs the diffusion models, which were not found"
    return None
