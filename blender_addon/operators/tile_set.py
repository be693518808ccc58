"""Wang tile sets (docs/guide/tile-sets.md, material/tile_set.py):

    texture_variants.make_tile_set     the backend makes a tile set of the material's texture (and maps)
    texture_variants.use_tile_set      show the set on the material through the Wang Layout node, or stop
    texture_variants.bake_tile_layout  bake N×M cells of the layout into tileable images: a result set
"""

import json
import shutil
import time
from types import SimpleNamespace

import bpy

from .. import paths
from ..errors import UserError, reports_errors
from ..material import compare, map_io, results, storage, target, texture_io, tile_set, tiling_preview
from ..material import maps as material_maps
from ..pixels import sizing
from .generate import JobOperator, _redraw, timeout_property


def _tile_set_of(context):
    material = target.active_material(context)
    return material, material.texture_variants.tile_set


def _spec_file(entry: dict) -> str:
    """The result entry's JSON description of the set."""
    path = entry.get("json")
    if not path:
        raise UserError("bad_output", "The backend sent a tile set without its description",
                        "update the backend (Preferences > Set Up Backend) and click Make Tile Set again")
    return path


def _forget_atlases(state) -> None:
    images = [entry.image for entry in state.atlases]
    state.atlases.clear()
    for image in images:
        if image is not None and image.users == 0:
            bpy.data.images.remove(image)


class TEXTURE_VARIANTS_OT_make_tile_set(JobOperator, bpy.types.Operator):
    """Make a Wang tile set of the material's texture (and its ticked maps): tiles whose edges match in
    every combination, laid out at random without visible repetition"""

    bl_idname = "texture_variants.make_tile_set"
    bl_label = "Make Tile Set"
    bl_options = {"REGISTER", "UNDO"}

    timeout: timeout_property()

    request = "tileset"

    def _size_plan(self, settings, image):
        return sizing.own_size(*image.size)  # read at its own size

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        state = target.active_material(context).texture_variants.tile_set
        side = min(image.size)
        if side < state.tile_size:
            raise UserError("too_small", f"'{image.name}' is {image.size[0]}×{image.size[1]}, smaller than the "
                            f"{state.tile_size} px tiles", f"set Tile Size to {max(64, side // 64 * 64)} or less")
        size = max(16, state.tile_size // 8 * 8)  # the backend's tiles are whole latent cells (8 px)
        return {"engine": settings.engine, "colours": int(state.colours), "size": size, "seed": seed}

    def _maps(self, material, node, job_dir) -> dict:
        return map_io.export_chosen(material, node, job_dir)

    def _use_results(self, context, job, made_for: dict) -> set:
        material, source = made_for["material"], made_for["source"]
        entry = job.files[0]
        with open(_spec_file(entry), encoding="utf-8") as f:
            spec = json.load(f)
        folder, pack = storage.variant_destination(job.folder)
        stem = paths.safe_stem(source.name if source else "texture")
        stride = spec["tile_size"] + 2 * spec["padding"]
        size = (spec["columns"] * stride, spec["rows"] * stride)
        state = material.texture_variants.tile_set
        showing = tile_set.is_on(material)
        if showing:
            tile_set.stop(material)  # shown again below with the new atlases
        _forget_atlases(state)
        name = f"{stem} wang atlas"
        file = texture_io.import_variant(entry["path"], name, source, made_for["encoding"], size, folder)
        images = {tile_set.COLOR: texture_io.load_variant(str(file), name, source, made_for["encoding"]["kind"])}
        for map_name, path in sorted((entry.get("maps") or {}).items()):
            images[map_name] = map_io.import_map(path, f"{name} {map_name}", size, folder, f"{file.stem}_{map_name}")
        for atlas_name, image in images.items():
            storage.settle(image, pack)
            item = state.atlases.add()
            item.name, item.image, item.path = atlas_name, image, bpy.path.abspath(image.filepath)
        state.spec = json.dumps(spec, sort_keys=True)
        state.created = time.strftime("%Y-%m-%d %H:%M")
        paths.mark_finished(job.folder)
        if showing:
            _show(context, material)
        self.report({"INFO"}, f"Tile set ready ({tile_set.summary(spec)}): click Use Tile Set")
        return {"FINISHED"}


def _show(context, material) -> list[str]:
    node = target.resolve_material(material)[1]
    found = material_maps.find_maps(material, node).found
    state = material.texture_variants.tile_set
    return tile_set.use(material, node, {name: f.node for name, f in found.items()}, state.scale, state.seed)


class TEXTURE_VARIANTS_OT_use_tile_set(bpy.types.Operator):
    """Show the tile set on the material: each cell of the UV grid gets a tile whose edges match its
    neighbours' (the texture and every map with an atlas); click again to put the node tree back exactly"""

    bl_idname = "texture_variants.use_tile_set"
    bl_label = "Use Tile Set"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        material, state = _tile_set_of(context)
        if tile_set.is_on(material):
            tile_set.stop(material)
            self.report({"INFO"}, f"{material.name}: tile set off, the node tree as it was")
        else:
            if len(material.texture_variants.applied):
                raise UserError("variant_applied", f"'{material.name}' shows an applied variant",
                                "click Revert first, then Use Tile Set (or make a tile set of the variant)")
            if compare.showing(material) or tiling_preview.is_on(material):
                raise UserError("preview_on", f"'{material.name}' shows a comparison or the tiling preview",
                                "turn it off first, then click Use Tile Set")
            left = _show(context, material)
            kept = f"; {', '.join(left)} keep their own texture (not in the set)" if left else ""
            self.report({"INFO"}, f"{material.name}: {tile_set.summary(tile_set.spec_of(material))}, "
                        f"{state.scale:g} cells per UV, layout seed {state.seed}{kept}")
        _redraw(context)
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_bake_tile_layout(bpy.types.Operator):
    """Bake Cells X × Cells Y cells of the tile set's layout into one tileable image per map: a result
    set to Apply and Bake like variants, for game engines and other programs"""

    bl_idname = "texture_variants.bake_tile_layout"
    bl_label = "Bake Layout"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        material, state = _tile_set_of(context)
        _material, node, source = target.resolve_material(material)
        cells = (state.cells_x, state.cells_y)
        job_dir = paths.new_job_folder(storage.jobs_root())
        try:
            files = tile_set.bake_layout(material, cells, state.seed, job_dir)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        spec = tile_set.spec_of(material)  # checked by bake_layout: the set is there
        width, height = cells[0] * spec["tile_size"], cells[1] * spec["tile_size"]
        record = {"kind": "layout", "seed": state.seed, "cells": list(cells), "tileset": spec}
        entry = {"path": str(files.pop(tile_set.COLOR)), "maps": {k: str(v) for k, v in files.items()},
                 "parameters": record}
        nodes = {name: f.node.name for name, f in material_maps.find_maps(material, node).found.items()
                 if name in entry["maps"]}
        made_for = {"material": material, "node_name": node.name, "source": source,
                    "encoding": {"kind": texture_io.source_kind(source), "scale": 1.0},
                    "plan": sizing.SizePlan(width, height), "maps": nodes}
        results.load_job(context.scene.texture_variants, SimpleNamespace(folder=str(job_dir), files=[entry]), made_for)
        self.report({"INFO"}, f"Layout of {cells[0]}×{cells[1]} cells baked ({width}×{height}"
                    f"{''.join(' + ' + m for m in sorted(entry['maps']))}): Apply or Bake it like a variant")
        _redraw(context)
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_make_tile_set, TEXTURE_VARIANTS_OT_use_tile_set, TEXTURE_VARIANTS_OT_bake_tile_layout)
