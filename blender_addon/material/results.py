"""Result sets: a finished job's variants (and their maps) loaded into the .blend, the current set,
each material's history, and the check that a set is applied to what it was made for."""

import json
import time
from pathlib import Path

import bpy

from .. import panel_rules, paths
from ..errors import UserError
from . import map_io, pictures, storage, texture_io
from . import target as material_target

HISTORY_LIMIT = 8  # result sets kept per material; older ones (and their unused images) are dropped


def _copy_set(source, target) -> None:
    """Copy a result set's fields and variants (the images are shared, not copied)."""
    for name in ("node_name", "source", "created", "engine", "seed", "width", "height", "notes", "expectation", "index",
                 "summary"):
        setattr(target, name, getattr(source, name))
    target.variants.clear()
    for variant in source.variants:
        item = target.variants.add()
        item.name, item.image, item.path = variant.name, variant.image, variant.path
        item.seed, item.engine, item.card, item.overlay = variant.seed, variant.engine, variant.card, variant.overlay
        map_io.copy_maps(variant, item)
    map_io.set_map_nodes(target, {entry.name: entry.node_name for entry in source.map_nodes})


def _drop_unused(images) -> None:
    for image in images:
        if image is not None and image.users == 0:
            bpy.data.images.remove(image)


def _remember(material, current) -> None:
    """Put the current set first in the material's history, dropping the oldest beyond the limit."""
    history = material.texture_variants.history
    _copy_set(current, history.add())
    history.move(len(history) - 1, 0)
    while len(history) > HISTORY_LIMIT:
        dropped = [image for v in history[-1].variants for image in (v.image, v.overlay, *(m.image for m in v.maps))]
        history.remove(len(history) - 1)
        _drop_unused(dropped)
    material.texture_variants.history_index = 0


def _entry_parameters(entry: dict) -> dict:
    params = entry.get("parameters") or {}
    return json.loads(params) if isinstance(params, str) else params  # a str: the PNG's parameters text


def _entry_seed(entry: dict) -> tuple[int, str]:
    """(seed, kind): the engine for variants, "restyle", "tileable", "upscale" or "layout" (a baked
    tile set layout) for those results."""
    params = _entry_parameters(entry)
    if params.get("upscale_factor"):
        return int(params.get("seed", 0)), "upscale"
    if params.get("kind") == "tileable":
        return 0, "tileable"
    if params.get("kind") == "layout":
        return int(params.get("seed", 0)), "layout"
    return int(params.get("seed", 0)), "restyle" if params.get("restyle_prompt") else str(params.get("engine", ""))


def load_job(settings, job, made_for: dict, append: bool = False) -> int:
    """The finished job's variants as the current result set and the newest of the material's history
    (`append`: a restyle's results join the current set's variants, the first new one picked).

    `made_for`: {"material", "node_name", "source" (image or None), "encoding", "plan", "maps" ({map
    name: its node's name}, the maps sent)} from Generate.
    """
    source, plan, encoding = made_for["source"], made_for["plan"], made_for["encoding"]
    folder, pack = storage.variant_destination(job.folder)
    stem = paths.safe_stem(source.name if source else "texture")
    current = settings.current
    # a restyle joins the current set when that set is of the same material and node
    append = append and current.material == made_for["material"] and current.node_name == made_for["node_name"]
    if not append:
        current.variants.clear()
    added = len(current.variants)
    for entry in job.files:
        seed, engine = _entry_seed(entry)
        kind = engine if engine in ("restyle", "layout", "upscale") else "variant"
        name = f"{stem} tileable" if engine == "tileable" else f"{stem} {kind} s{seed}"
        file = texture_io.import_variant(entry["path"], name, source, encoding, (plan.width, plan.height), folder)
        image = texture_io.load_variant(str(file), name, source, encoding["kind"])
        storage.settle(image, pack)
        if not bpy.app.background:
            image.preview_ensure()
        item = current.variants.add()
        item.name, item.image, item.path = image.name, image, entry["path"]
        item.seed, item.engine = seed, engine
        item.card = json.dumps(_entry_parameters(entry).get("card") or {}, sort_keys=True)
        map_io.load_maps(item, entry.get("maps") or {}, (plan.width, plan.height), folder, pack, Path(file).stem)
        if entry.get("band"):  # Make Tileable: where it re-made pixels, shown over the thumbnail
            item.overlay = pictures.band_overlay(image, entry["band"], f"{image.name} band")
    paths.mark_finished(job.folder)
    first = current.variants[0] if len(current.variants) else None
    if not append:  # a joined set keeps what it was made for (its source: the original texture)
        current.material, current.node_name, current.source = made_for["material"], made_for["node_name"], source
        map_io.set_map_nodes(current, made_for.get("maps", {}))
    current.created = time.strftime("%Y-%m-%d %H:%M")
    current.engine, current.seed = (first.engine, first.seed) if first else ("", 0)
    current.width, current.height = plan.width, plan.height
    current.notes = "; ".join(plan.notes)
    first_record = _entry_parameters(job.files[0]) if job.files else {}
    current.expectation = panel_rules.patch_expectation(first_record) or panel_rules.tileable_summary(first_record)
    if not append:  # a restyle that joins the set leaves what the set is
        current.summary = panel_rules.result_summary(first_record)
    current.index = added
    if not material_target.not_editable_reason(made_for["material"]):  # linked data keeps no history
        _remember(made_for["material"], current)
    return len(current.variants) - added


def use_history(settings, material, index: int):
    """Make the material's history set `index` the current result set; returns it."""
    history = material.texture_variants.history
    if not 0 <= index < len(history):
        raise UserError("no_variant", f"'{material.name}' has no result set {index}",
                        "pick one in the History list of the Variants panel")
    _copy_set(history[index], settings.current)
    settings.current.material = material
    material.texture_variants.history_index = index
    return settings.current


def check_binding(current, material, node, to_this_material: bool) -> None:
    """Refuse to apply a set to another material or node than it was made for, unless asked to."""
    made_for = current.material
    if to_this_material or made_for is None:
        return
    if made_for != material or current.node_name != node.name:
        raise UserError("other_target", f"These variants were made for '{made_for.name}' (node "
                        f"'{current.node_name}'), not for '{material.name}' (node '{node.name}')",
                        "select an object that uses that material, pick an earlier result set of this "
                        "material in History, or click Apply to This Material to use them here anyway")
