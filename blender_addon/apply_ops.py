"""Apply, Revert and Bake: a variant into the material's Image Texture node, the original back, and
the applied variant written to a file next to the .blend.

Each material records what the add-on did to it (`material.texture_variants`: node_name,
original_image, applied_image), and after every operator that record equals what the node shows.
Changes go through `put_image` / `take_back`, one (material, node) at a time, so a set of maps goes
through the same path node by node. Linked and overridden materials are refused ("make it local"),
unless Apply is asked for a local copy; Apply to This Object Only gives each chosen object its own
copy of the material.
"""

import os
from pathlib import Path

import bpy
from bpy.props import BoolProperty

from . import material_target, operators, paths, preferences, results, texture_io
from .errors import UserError, reports_errors


def put_image(material, node, image) -> None:
    """Show `image` in `node`, keeping the original (with a fake user) for Revert."""
    state = material.texture_variants
    if state.original_image is None or state.node_name != node.name:
        # Keep the original in the .blend even while no node uses it, so Revert can restore it.
        state.original_image, state.node_name = node.image, node.name
        state.original_had_fake_user = node.image.use_fake_user
        node.image.use_fake_user = True
    node.image = image
    state.applied_image = image


def take_back(material, node):
    """Put the original image back into `node` and forget the record; returns the original."""
    state = material.texture_variants
    original = state.original_image
    node.image = original
    original.use_fake_user = state.original_had_fake_user
    state.original_image, state.applied_image, state.node_name = None, None, ""
    return original


def _check_not_applied_elsewhere(material, node) -> None:
    state = material.texture_variants
    if state.original_image is not None and state.node_name != node.name \
            and material.node_tree.nodes.get(state.node_name) is not None:
        raise UserError("applied_elsewhere", f"A variant is already applied to the node '{state.node_name}' "
                        f"of '{material.name}'", "click Revert to Original first, then apply to this node")


def _holders(material) -> set:
    return {o for o in bpy.data.objects if any(slot.material == material for slot in o.material_slots)}


def _peers(context, material) -> list:
    """The active object, then the other selected objects whose active material is `material`."""
    active = context.active_object
    others = [o for o in context.selected_objects if o != active and o.active_material == material]
    return [active, *sorted(others, key=lambda o: o.name)]


def _check_objects(objects) -> None:
    for obj in objects:
        if obj.library is not None or obj.override_library is not None:
            raise UserError("linked_data", f"The object '{obj.name}' is linked from a library",
                            "make it local (Object > Relations > Make Local > Selected Objects and Data)")


def _own_material(obj, material, force_copy: bool):
    """A material `obj` alone uses: `material` itself when no other object has it, else a copy in its slots."""
    if not force_copy and _holders(material) == {obj}:
        return material
    copy = material.copy()
    copy.name = f"{material.name} {obj.name}"
    copy.texture_variants.history.clear()  # the history stays with the material it was made from
    for slot in obj.material_slots:
        if slot.material == material:
            if slot.link == "DATA" and (obj.data.users > 1 or obj.data.library is not None):
                slot.link = "OBJECT"  # the mesh is shared: the copy goes on this object only
            slot.material = copy
    return copy


class TEXTURE_VARIANTS_OT_apply_variant(bpy.types.Operator):
    """Put the picked variant into the material's Image Texture node (Revert brings the original back)"""

    bl_idname = "texture_variants.apply_variant"
    bl_label = "Apply Variant"
    bl_options = {"REGISTER", "UNDO"}

    index: operators.variant_index()
    to_this_material: BoolProperty(
        name="Apply to This Material", default=False,
        description="Use variants made for another material or node on this one")
    object_only: BoolProperty(
        name="Apply to This Object Only", default=False,
        description="Give the active object (and the selected objects with the same material) its own copy of "
        "the material, each with its own variant while there are enough")
    local_copy: BoolProperty(
        name="Local Copy", default=False,
        description="For a linked or overridden material: apply to a local copy of it on the active object")

    @reports_errors()
    def execute(self, context):
        material, node, _source = material_target.resolve(context)
        item = operators.picked(context, self.index)
        current = context.scene.texture_variants.current
        results.check_binding(current, material, node, self.to_this_material)
        copy_needed = bool(material_target.not_editable_reason(material))
        if copy_needed and not self.local_copy:
            material_target.check_editable(material)
        _check_not_applied_elsewhere(material, node)
        objects = _peers(context, material) if self.object_only else [context.active_object]
        if not (self.object_only or copy_needed):
            put_image(material, node, item.image)
            self.report({"INFO"}, f"Applied {item.image.name} to {material.name}")
            return {"FINISHED"}
        _check_objects(objects)
        variants, first = current.variants, list(current.variants).index(item)
        for k, obj in enumerate(objects):
            own = _own_material(obj, material, copy_needed)
            put_image(own, own.node_tree.nodes[node.name], variants[(first + k) % len(variants)].image)
        shared = " (fewer variants than objects: some share one)" if len(objects) > len(variants) else ""
        self.report({"INFO"}, f"Applied variants to {len(objects)} object(s), each with its own material{shared}")
        return {"FINISHED"}


def _applied(material):
    """The node holding the applied variant; UserError when none is applied or the material is linked."""
    material_target.check_editable(material)
    state = material.texture_variants
    node = material.node_tree.nodes.get(state.node_name)
    if state.original_image is None or node is None or node.type != "TEX_IMAGE" or node.image is None:
        raise UserError("no_variant", f"No variant is applied to '{material.name}'",
                        "nothing to revert; apply a variant first")
    return node


class TEXTURE_VARIANTS_OT_revert(bpy.types.Operator):
    """Put the original image back into the material's Image Texture node"""

    bl_idname = "texture_variants.revert"
    bl_label = "Revert to Original"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        material = material_target.active_material(context)
        original = take_back(material, _applied(material))
        self.report({"INFO"}, f"Restored {original.name}")
        return {"FINISHED"}


def _write_baked(image, target: Path) -> None:
    """The variant's bytes at `target`: its file, its packed bytes, or (painted) Blender's pixels."""
    source = texture_io.original_file(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    if image.is_dirty or (image.packed_file is None and not (source and os.path.isfile(source))):
        temp = target.with_name(f".{target.name}.tmp")
        texture_io.write_pixels(image, temp)
    elif image.packed_file is not None:
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_bytes(image.packed_file.data)
    else:
        paths.copy_new_file(source, target)
        return
    try:
        paths.copy_new_file(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _bake_suffix(image) -> str:
    if not image.is_dirty:
        suffix = Path(image.filepath).suffix.lower()
        if suffix in {".png", ".exr"}:
            return suffix
    return texture_io.SUFFIX[texture_io.source_kind(image)]


class TEXTURE_VARIANTS_OT_bake(bpy.types.Operator):
    """Write the applied variant (PNG, or OpenEXR for HDR) into a textures folder next to the .blend and use that file"""

    bl_idname = "texture_variants.bake"
    bl_label = "Bake Variant"
    bl_options = {"REGISTER", "UNDO"}

    pack: BoolProperty(name="Pack", default=False, description="Also pack the baked texture into the .blend")

    def invoke(self, context, event):
        self.pack = preferences.get(context).pack_on_bake
        return self.execute(context)

    @reports_errors()
    def execute(self, context):
        prefs = preferences.get(context)
        material = material_target.active_material(context)
        try:
            image = _applied(material).image
        except UserError as e:
            raise UserError(e.code, e.message, "pick a variant and click Apply, then Bake"
                            if e.code == "no_variant" else e.hint) from None
        state = material.texture_variants
        folder = paths.bake_folder(bpy.data.filepath, bpy.path.abspath(prefs.bake_folder))
        protected = tuple(p for p in (texture_io.original_file(state.original_image),) if p)
        target = paths.unique_target(folder, paths.safe_stem(image.name), _bake_suffix(image), protected=protected)
        try:
            _write_baked(image, target)
        except OSError as e:
            raise UserError("bake_failed", f"Could not write the baked texture: {e}",
                            "choose a writable Bake Folder in the add-on preferences") from e
        image.filepath = bpy.path.relpath(str(target)) if bpy.data.filepath else str(target)
        if image.packed_file is not None:
            image.unpack(method="REMOVE")  # drop the packed bytes, keep the path: the baked file
        image.reload()
        if self.pack:
            image.pack()
        self.report({"INFO"}, f"Baked {image.name} to {target}")
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_apply_variant, TEXTURE_VARIANTS_OT_revert, TEXTURE_VARIANTS_OT_bake)
