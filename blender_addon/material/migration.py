"""Upgrade the apply record of a .blend saved by the add-on before whole materials, so Revert still
brings the original image back.

That add-on kept one record per material in `material.texture_variants` itself: `original_image`
and `applied_image` (Image pointers), `node_name` (string) and `original_had_fake_user` (0/1). They
are no longer registered, but Blender keeps them in the file as the group's ID properties (read with
`.get`); Blender 5.0, opening a file saved by 4.x, also keeps a copy in the material's own custom
properties (`material["texture_variants"]`). On load (and for the file open when the add-on is
enabled) each local material's old record becomes a record in `texture_variants.applied` when its
node still shows the applied image, and the old keys are removed from both places, so it runs once.
When the node was deleted or shows another image, the original image keeps its fake user (it stays
in the file) and the console says so.
"""

import bpy
from bpy.app.handlers import persistent

from . import storage, target

OLD_KEYS = ("original_image", "applied_image", "node_name", "original_had_fake_user")


def _old_stores(material) -> list:
    """The ID-property groups that may hold the old record: the add-on's group and, in Blender 5.0, the
    material's custom property of the same name."""
    stores, legacy = [material.texture_variants], material.get("texture_variants")
    if hasattr(legacy, "keys"):  # in Blender 4.x, the same group again (popping twice is harmless)
        stores.append(legacy)
    return [store for store in stores if any(key in store.keys() for key in OLD_KEYS)]


def _image(value):
    return value if isinstance(value, bpy.types.Image) else None


def _upgrade(material, old: dict) -> str:
    """Turn one old record into a per-node record; returns what the user must hear ("" when nothing)."""
    original, applied = _image(old.get("original_image")), _image(old.get("applied_image"))
    name, had_fake_user = str(old.get("node_name") or ""), bool(old.get("original_had_fake_user"))
    if original is None:
        return ""  # reverted (or never applied): nothing to keep
    nodes = material.node_tree.nodes if material.node_tree else {}
    node = nodes.get(name)
    shown = node.image if node is not None and node.type == "TEX_IMAGE" else None
    records = material.texture_variants.applied
    if applied is not None and shown == applied and records.get(name) is None:
        record = records.add()
        record.name, record.original_image, record.applied_image = name, original, applied
        record.original_had_fake_user = had_fake_user
        return ""
    if shown == original:  # put back by hand: as Revert leaves it
        original.use_fake_user = had_fake_user
        return ""
    original.use_fake_user = True  # no node to put it back into: it must stay in the file
    where = f"shows {shown.name}" if shown is not None else "is gone"
    return (f"'{material.name}': the Image Texture node '{name}' {where}, so Revert cannot put the original "
            f"back there; the original image '{original.name}' is kept in the file (fake user): pick it in "
            "the node by hand")


def migrate() -> list[str]:
    """Upgrade every local material holding an old record; returns the notices (also printed/shown)."""
    notices = []
    for material in bpy.data.materials:
        if target.not_editable_reason(material):
            continue
        stores = _old_stores(material)
        if not stores:
            continue
        notice = _upgrade(material, {key: stores[0].get(key) for key in OLD_KEYS})
        for store in stores:
            for key in OLD_KEYS:
                store.pop(key, None)
        if notice:
            notices.append(notice)
    if notices:
        storage.warn(["Upgrading this file's applied variants:", *notices])
    return notices


@persistent
def _after_load(*_args) -> None:
    migrate()


def register() -> None:
    bpy.app.handlers.load_post.append(_after_load)
    if isinstance(bpy.data, bpy.types.BlendData):  # not while Blender starts up (load_post runs then)
        migrate()


def unregister() -> None:
    if _after_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_after_load)
