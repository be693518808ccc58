"""The add-on as released before whole materials (one apply record per material), installed from its
zip in tests/blender/fixtures/: applies variants to materials as a user did, leaves some records
inconsistent (node deleted, node showing another image, original put back by hand, reverted), and saves WORKDIR/old.blend; records
the raw ID-property layout of each material's record. See harness.py for how it is run."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants
OLD_KEYS = ("original_image", "applied_image", "node_name", "original_had_fake_user")


def applied(name: str, had_fake_user: bool = False):
    """A plane whose material had `name original` in its Texture node, with `name variant` applied."""
    original, variant = bpy.data.images.new(f"{name} original", 8, 8), bpy.data.images.new(f"{name} variant", 8, 8)
    original.use_fake_user = had_fake_user
    _obj, material, node = h.plane_with_image(original, name)
    current = bpy.context.scene.texture_variants.current
    current.variants.clear()
    current.material, current.node_name, current.source = material, node.name, original
    current.variants.add().image = variant
    outcome = h.call(OPS.apply_variant, index=0)
    assert outcome["error"] is None, outcome
    return material, node


def raw(value):
    return ["Image", value.name] if isinstance(value, bpy.types.Image) else [type(value).__name__, value]


def scenario(rec):
    zip_path, workdir, _ = h.args()
    h.install(zip_path)
    h.clean_scene()
    rec["blender"] = bpy.app.version_string
    rec["old_addon"] = "applied" not in bpy.types.Material.bl_rna.properties["texture_variants"].fixed_type.properties
    applied("Applied")
    applied("Kept", had_fake_user=True)
    material, node = applied("Deleted")
    material.node_tree.nodes.remove(node)
    _material, node = applied("Replaced")
    node.image = bpy.data.images.new("Replaced other", 8, 8)
    material, node = applied("Put Back")
    node.image = bpy.data.images["Put Back original"]  # by hand, not with Revert
    applied("Reverted")
    rec["revert"] = h.call(OPS.revert)
    h.plane_with_image(bpy.data.images.new("Untouched original", 8, 8), "Untouched")
    group, custom = {}, {}
    for m in bpy.data.materials:
        state = m.texture_variants
        group[m.name] = {key: raw(state.get(key)) for key in state.keys() if key in OLD_KEYS}
        legacy = m.get("texture_variants")  # Blender 4.x: the same ID properties; 5.0: not there
        custom[m.name] = {key: raw(legacy.get(key)) for key in legacy.keys()} if legacy is not None else None
    rec["group"], rec["custom"] = group, custom
    rec["fake_user"] = {i.name: i.use_fake_user for i in bpy.data.images if i.name.endswith(" original")}
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(workdir, "old.blend"))
    rec["saved"] = True


h.Recorder().run(scenario)
