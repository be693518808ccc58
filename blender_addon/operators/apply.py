"""Apply, Revert and Bake: a variant (its base colour and every map it carries) into the material's
Image Texture nodes, the originals back, and the applied images written to files next to the .blend.

Each material records what the add-on did to it, one record per changed node
(`material.texture_variants.applied`, keyed by node name: original_image, applied_image, map_name),
and after every operator those records equal what the nodes show. Changes go through `put_image` /
`take_back`, one (material, node) at a time. Each operator is one undo step and checks everything
before it changes anything: a map whose node is gone refuses the whole Apply. Linked and overridden
materials are refused ("make it local"), unless Apply is asked for a local copy; Apply to This
Object Only gives each chosen object its own copy of the material.
"""

import os
from pathlib import Path

import bpy
from bpy.props import BoolProperty

from .. import paths
from .. import prefs as preferences
from ..errors import UserError, reports_errors
from ..material import compare, results, texture_io, tile_set
from ..material import maps as material_maps
from ..material import target as material_target
from . import generate


def put_image(material, node, image, map_name: str = "") -> None:
    """Show `image` in `node`, keeping the original (with a fake user) for Revert."""
    records = material.texture_variants.applied
    record = records.get(node.name)
    if record is None:
        # Keep the original in the .blend even while no node uses it, so Revert can restore it.
        record = records.add()
        record.name, record.map_name = node.name, map_name
        record.original_image, record.original_had_fake_user = node.image, node.image.use_fake_user
        node.image.use_fake_user = True
    node.image = image
    record.applied_image = image


def record_node(material, record):
    """The Image Texture node a record is about, or None when it was deleted (or is no image node now)."""
    node = material.node_tree.nodes.get(record.name) if material.node_tree else None
    return node if node is not None and node.type == "TEX_IMAGE" else None


def take_back(material, name: str):
    """Put the original image back into node `name` (if it is still there) and forget its record;
    returns the original."""
    records = material.texture_variants.applied
    record = records[name]
    node, original = record_node(material, record), record.original_image
    if node is not None:
        node.image = original
    if original is not None:
        original.use_fake_user = record.original_had_fake_user
    records.remove(records.find(name))
    return original


def _map_node(material, current, name: str):
    entry = current.map_nodes.get(name)
    node = material.node_tree.nodes.get(entry.node_name) if entry is not None else None
    if node is None or node.type != "TEX_IMAGE":
        raise UserError("map_node_missing", f"The {name} map's Image Texture node "
                        f"'{entry.node_name if entry else '?'}' is no longer in '{material.name}'",
                        "undo its deletion (Ctrl+Z), or generate again from the material as it is now")
    if node.image is None:
        raise UserError("image_missing", f"The {name} map's Image Texture node '{node.name}' has no image",
                        "open the map's image in that node again, or generate again")
    return node


def targets(material, node, variant, current) -> list[tuple[str, object, str]]:
    """(node name, image, map name) for every image `variant` puts into `material`: its base colour
    into `node`, each map into the node it was made from (on another material: the node found for
    that map there; maps it lacks are left out). Raises before anything changes."""
    out = [(node.name, variant.image, "")]
    found = material_maps.find_maps(material, node).found if current.material != material else None
    for m in variant.maps:
        if m.image is None:
            raise UserError("image_missing", f"The {m.name} map of '{variant.name}' was deleted",
                            "generate again, or pick another variant")
        if found is None:
            out.append((_map_node(material, current, m.name).name, m.image, m.name))
        elif m.name in found:
            out.append((found[m.name].node.name, m.image, m.name))
    return out


def _put_all(material, chosen) -> None:
    nodes = material.node_tree.nodes
    for name, image, map_name in chosen:
        put_image(material, nodes[name], image, map_name)


def _check_not_applied_elsewhere(material, chosen, current) -> None:
    """Refuse while a variant is applied to a node outside this set (its base colour's and maps' nodes)."""
    known = {name for name, _, _ in chosen}
    if current.material == material:
        known |= {entry.node_name for entry in current.map_nodes}
    for record in material.texture_variants.applied:
        if record.name not in known and record_node(material, record) is not None:
            raise UserError("applied_elsewhere", f"A variant is already applied to the node '{record.name}' "
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

    index: generate.variant_index()
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
        tile_set.check_off(material, "Apply")
        item = generate.picked(context, self.index)
        current = context.scene.texture_variants.current
        results.check_binding(current, material, node, self.to_this_material)
        copy_needed = bool(material_target.not_editable_reason(material))
        if copy_needed and not self.local_copy:
            material_target.check_editable(material)
        chosen = targets(material, node, item, current)
        _check_not_applied_elsewhere(material, chosen, current)
        if not copy_needed:
            compare.leave(material)  # everything checked: what Apply changes must be what the object shows
        maps = [map_name for _, _, map_name in chosen[1:]]
        if not (self.object_only or copy_needed):
            _put_all(material, chosen)
            with_maps = f" with its {', '.join(maps)} map{'s' if len(maps) > 1 else ''}" if maps else ""
            self.report({"INFO"}, f"Applied {item.image.name}{with_maps} to {material.name}")
            return {"FINISHED"}
        objects = _peers(context, material) if self.object_only else [context.active_object]
        _check_objects(objects)
        variants, first = current.variants, list(current.variants).index(item)
        plans = [targets(material, node, variants[(first + k) % len(variants)], current) for k in range(len(objects))]
        for obj, plan in zip(objects, plans, strict=True):
            _put_all(_own_material(obj, material, copy_needed), plan)
        shared = " (fewer variants than objects: some share one)" if len(objects) > len(variants) else ""
        self.report({"INFO"}, f"Applied variants to {len(objects)} object(s), each with its own material{shared}")
        return {"FINISHED"}


def applied_records(material) -> list:
    """The records whose nodes are still there; UserError when none is applied or the material is linked."""
    material_target.check_editable(material)
    live = [r for r in material.texture_variants.applied
            if r.original_image is not None and (node := record_node(material, r)) is not None and node.image]
    if not live:
        raise UserError("no_variant", f"No variant is applied to '{material.name}'",
                        "nothing to revert; apply a variant first")
    return live


class TEXTURE_VARIANTS_OT_revert(bpy.types.Operator):
    """Put the original images back into every Image Texture node Apply changed (base colour and maps)"""

    bl_idname = "texture_variants.revert"
    bl_label = "Revert to Original"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        material = material_target.active_material(context)
        applied_records(material)
        originals = [take_back(material, name) for name in [r.name for r in material.texture_variants.applied]]
        restored = [image.name for image in originals if image is not None]
        self.report({"INFO"}, f"Restored {', '.join(restored)}")
        return {"FINISHED"}


def _write_baked(image, target: Path) -> None:
    """The image's bytes at `target`: its file or its packed bytes when they are in the target's
    format, else (painted, or another format) Blender's pixels at the image's depth."""
    source = texture_io.original_file(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    same_format = Path(image.filepath).suffix.lower() == target.suffix
    if image.is_dirty or not same_format or (image.packed_file is None and not (source and os.path.isfile(source))):
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
    """.png or .exr: the image's own when it is one of those, else what its depth is written as."""
    if not image.is_dirty:
        suffix = Path(image.filepath).suffix.lower()
        if suffix in {".png", ".exr"}:
            return suffix
    return texture_io.SUFFIX[texture_io.bake_kind(image)]


def write_all(images, folder: Path, protected: tuple) -> list[Path]:
    """Each image into a new file in `folder` (none of `protected`); all or, on an error, none."""
    written: list[Path] = []
    try:
        for image in images:
            target = paths.unique_target(folder, paths.safe_stem(image.name), _bake_suffix(image), protected=protected)
            _write_baked(image, target)
            written.append(target)
    except OSError as e:
        for path in written:
            path.unlink(missing_ok=True)
        raise UserError("bake_failed", f"Could not write the baked texture: {e}",
                        "choose a writable Bake Folder in the add-on preferences") from e
    return written


def _use_file(image, target: Path, pack: bool) -> None:
    image.filepath = bpy.path.relpath(str(target)) if bpy.data.filepath else str(target)
    if image.packed_file is not None:
        image.unpack(method="REMOVE")  # drop the packed bytes, keep the path: the baked file
    image.reload()  # the colour space stays the datablock's: sRGB base colour, Non-Color maps
    if pack:
        image.pack()


class TEXTURE_VARIANTS_OT_bake(bpy.types.Operator):
    """Write the applied variant and its maps (PNG, or OpenEXR for HDR and float maps) into a textures folder
    next to the .blend and use those files"""

    bl_idname = "texture_variants.bake"
    bl_label = "Bake Variant"
    bl_options = {"REGISTER", "UNDO"}

    pack: BoolProperty(name="Pack", default=False, description="Also pack the baked textures into the .blend")

    def invoke(self, context, event):
        self.pack = preferences.get(context).pack_on_bake
        return self.execute(context)

    @reports_errors()
    def execute(self, context):
        prefs = preferences.get(context)
        material = material_target.active_material(context)
        try:
            records = applied_records(material)
        except UserError as e:
            raise UserError(e.code, e.message, "pick a variant and click Apply, then Bake"
                            if e.code == "no_variant" else e.hint) from None
        images = [record_node(material, r).image for r in records]
        folder = paths.bake_folder(bpy.data.filepath, bpy.path.abspath(prefs.bake_folder))
        protected = tuple(p for p in (texture_io.original_file(r.original_image) for r in records) if p)
        written = write_all(images, folder, protected)
        for image, target in zip(images, written, strict=True):
            _use_file(image, target, self.pack)
        self.report({"INFO"}, f"Baked {', '.join(image.name for image in images)} to {folder}")
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_apply_variant, TEXTURE_VARIANTS_OT_revert, TEXTURE_VARIANTS_OT_bake)
