"""The backend's parameters as backend/params.py declares them: defaults, ranges, choices, help texts
and the map names, read from generated/params.json (written by scripts/params_spec.py; a test fails
when it is stale). Plain Python: the add-on never imports backend/, and its settings (properties.py)
and map search (material/maps.py) take these values from here when the add-on registers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

SPEC_FILE = Path(__file__).resolve().parent / "generated" / "params.json"


@functools.cache
def _declared() -> dict:
    return json.loads(SPEC_FILE.read_text(encoding="utf-8"))


def declared(name: str) -> dict:
    """A parameter's declaration: a common one, or an engine option (restyle_strength, mask_mode...)."""
    found = _declared()["parameters"].get(name)
    for options in _declared()["options"].values():
        found = found or options.get(name)
    if found is None:
        raise KeyError(f"{name} is not a backend parameter ({SPEC_FILE.name})")
    return found


def default(name: str):
    return declared(name)["default"]


def sizes() -> dict:
    """The output sizes the backend makes: `low` and `high` per side, `multiple` per engine (diffusion:
    its latent grid), `default` (the declared default's side, the Fixed size's default), and
    `input_max`: the largest side of an image it reads as it is, `source_max`: the largest it reads
    reduced itself (larger sources are downsampled on export)."""
    spec = _declared()["sizes"]
    return {"low": spec["min"], "high": spec["max"], "multiple": dict(spec["multiple"]),
            "default": declared("size")["default"][0], "input_max": spec["input_max"],
            "source_max": spec["source_max"]}


def choices(name: str) -> tuple[str, ...]:
    return tuple(declared(name)["choices"])


def help_text(name: str) -> str:
    """The parameter's help text, as a Blender description (first letter upper-case)."""
    text = declared(name).get("help", "")
    return text[:1].upper() + text[1:]


def keywords(name: str, **own) -> dict:
    """An Int/FloatProperty's default, min, max (and description, when the parameter has a help text)
    from the declaration; `own` keywords (the panel's own default, say) replace them."""
    spec = sizes() if name == "size" else declared(name)
    out = {"default": spec["default"], "min": spec["low"], "max": spec["high"]}
    if spec.get("help"):
        out["description"] = help_text(name)
    return out | own


def enum_items(name: str, labels: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """An EnumProperty's items for a choice parameter, in the declared order (see `labelled`)."""
    return labelled(choices(name), labels, f"{name} choices")


def labelled(values: tuple[str, ...], labels: dict[str, tuple[str, str]], what: str) -> list[tuple[str, str, str]]:
    """(value, label, description) for each declared value, with the panel's `labels`, which must name
    exactly the declared values."""
    if set(labels) != set(values):
        raise ValueError(f"the panel's {what} {sorted(labels)} are not the backend's {list(values)}: run "
                         "scripts/params_spec.py, then update the labels in the add-on")
    return [(value, *labels[value]) for value in values]


def material_maps() -> tuple[str, ...]:
    """The maps the add-on finds on a Principled BSDF and sends with the base colour."""
    return tuple(_declared()["maps"]["material"])


def derivable_maps() -> tuple[str, ...]:
    """The maps the backend can make from a base colour (Add Missing Maps)."""
    return tuple(_declared()["maps"]["derivable"])
