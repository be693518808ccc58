"""What a result set is applied to: linked and overridden materials (refused, or a local copy), results
of one material refused on another, per-object apply, finding the texture through colour nodes, the
node picker, Match Source on a wide texture, and the history across save and reopen. Patch engine.
After every operator the add-on's record must equal what the node tree shows. See harness.py."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def step(rec, case, op, material=None, **kwargs):
    """Run an operator; record its outcome, whether the materials changed, and the invariant."""
    before = h.snapshot(material)
    outcome = h.call(op, **kwargs)
    outcome["unchanged"] = h.snapshot(material) == before
    outcome["invariant"] = h.recorded_matches_tree()
    rec[case] = outcome
    return outcome


def make_active(obj):
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def linked_cases(rec, workdir, source):
    """A material linked from a library, and a library override of it."""
    _, local, _ = h.plane_with_image(bpy.data.images.load(source), "LibSource")
    local.name = "LibMat"
    library = os.path.join(workdir, "library.blend")
    bpy.data.libraries.write(library, {local}, path_remap="ABSOLUTE")
    h.clean_scene()
    with bpy.data.libraries.load(library, link=True) as (_src, dst):
        dst.materials = ["LibMat"]
    linked = bpy.data.materials["LibMat", library]
    bpy.ops.mesh.primitive_plane_add()
    obj = bpy.context.active_object
    obj.data.materials.append(linked)
    rec["linked_generate"] = h.call(OPS.generate)
    for case, op in (("linked_apply", OPS.apply_variant), ("linked_revert", OPS.revert), ("linked_bake", OPS.bake)):
        step(rec, case, op)
    step(rec, "linked_local_copy", OPS.apply_variant, local_copy=True)
    own = obj.active_material
    rec["linked_local_copy"]["material"] = [own.name, own.library is None, h.base_color_image(own),
                                            h.base_color_image(linked)]
    override = linked.override_create(remap_local_usages=False)
    bpy.ops.mesh.primitive_plane_add()
    bpy.context.active_object.data.materials.append(override)
    h.call(OPS.generate)
    step(rec, "override_apply", OPS.apply_variant)
    step(rec, "override_local_copy", OPS.apply_variant, local_copy=True)
    rec["override_local_copy"]["base_color"] = h.base_color_image(bpy.context.active_object.active_material)


def binding_and_objects(rec, source):
    """Results of A refused on B unless asked; per-object apply leaves the other objects alone."""
    h.clean_scene()
    brick_image = bpy.data.images.load(source, check_existing=False)
    brick, material_a, _ = h.plane_with_image(brick_image, "Brick")
    gravel_image = bpy.data.images.load(source, check_existing=False)
    gravel, material_b, _ = h.plane_with_image(gravel_image, "Gravel")
    make_active(brick)
    h.set_settings(variants=3)
    rec["binding_generate"] = h.call(OPS.generate)
    make_active(gravel)
    step(rec, "other_material", OPS.apply_variant)
    step(rec, "to_this_material", OPS.apply_variant, to_this_material=True)
    rec["to_this_material"]["base_color"] = h.base_color_image(material_b)

    walls = [brick]
    for name in ("Wall2", "Wall3", "Wall4"):
        bpy.ops.mesh.primitive_plane_add()
        wall = bpy.context.active_object
        wall.name = name
        wall.data.materials.append(material_a)
        walls.append(wall)
    make_active(brick)
    walls[1].select_set(True)
    walls[2].select_set(True)  # Wall4 stays unselected
    step(rec, "object_only", OPS.apply_variant, index=0, object_only=True)
    rec["object_only"]["walls"] = [[w.name, w.active_material.name, h.base_color_image(w.active_material)]
                                   for w in walls]
    rec["object_only"]["variants"] = [v.image.name for v in bpy.context.scene.texture_variants.results]
    rec["object_only"]["shared_material"] = [material_a.name, h.base_color_image(material_a), brick_image.name]


def detection(rec, source):
    """Texture found through Hue/Saturation and Mix, a Color Ramp, a group; the picker lists image nodes."""
    h.clean_scene()
    _, material, tex = h.plane_with_image(bpy.data.images.load(source), "Detect")
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    hue = tree.nodes.new("ShaderNodeHueSaturation")
    mix = tree.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mask = tree.nodes.new("ShaderNodeTexImage")
    mask.name, mask.image = "Mask", bpy.data.images.new("mask", 8, 8)
    tree.links.new(tex.outputs["Color"], hue.inputs["Color"])
    tree.links.new(mask.outputs["Color"], mix.inputs["Factor"])
    tree.links.new(hue.outputs["Color"], mix.inputs["A"])
    tree.links.new(mix.outputs["Result"], bsdf.inputs["Base Color"])
    target = h.addon_module("material.target")
    rec["detect_hue_mix"] = target.resolve(bpy.context)[1].name
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    tree.links.new(tex.outputs["Color"], ramp.inputs["Fac"])
    tree.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    rec["detect_ramp"] = target.resolve(bpy.context)[1].name
    group = bpy.data.node_groups.new("Tint", "ShaderNodeTree")
    group.interface.new_socket("Color", in_out="INPUT", socket_type="NodeSocketColor")
    group.interface.new_socket("Color", in_out="OUTPUT", socket_type="NodeSocketColor")
    g_in, g_out = group.nodes.new("NodeGroupInput"), group.nodes.new("NodeGroupOutput")
    group.links.new(g_in.outputs[0], g_out.inputs[0])
    node = tree.nodes.new("ShaderNodeGroup")
    node.node_tree = group
    tree.links.new(tex.outputs["Color"], node.inputs[0])
    tree.links.new(node.outputs[0], bsdf.inputs["Base Color"])
    rec["detect_group"] = target.resolve(bpy.context)[1].name
    operators = h.addon_module("operators.generate")
    rec["picker_items"] = [item[0] for item in operators._image_node_items(None, bpy.context)]
    rec["pick_mask"] = h.call(OPS.pick_node, node="Mask")
    rec["after_pick"] = [material.texture_variants.image_node, target.resolve(bpy.context)[1].name]
    _, other, _ = h.plane_with_image(bpy.data.images.load(source, check_existing=False), "Other")
    rec["other_material_choice"] = [other.texture_variants.image_node, target.resolve(bpy.context)[1].name]


def wide_and_history(rec, workdir, source, wide):
    """Match Source keeps a 1024x384 aspect; the history survives Generates and save/reopen."""
    h.clean_scene()
    obj, material, _ = h.plane_with_image(bpy.data.images.load(wide), "Wide")
    h.set_settings(size_mode="match", variants=1)
    rec["wide_generate"] = h.call(OPS.generate)
    rec["wide_size"] = list(bpy.context.scene.texture_variants.results[0].image.size)
    h.set_settings(size_mode="fixed", size=64)
    rec["fixed_notes"] = h.addon_module("pixels.sizing").size_plan(bpy.context.scene.texture_variants,
                                                                   material.node_tree.nodes["Texture"].image).notes
    limit = h.addon_module("material.results").HISTORY_LIMIT
    seeds = []
    for seed in range(limit + 1):
        h.set_settings(seed=100 + seed)
        h.call(OPS.generate)
        seeds.append(100 + seed)
    history = material.texture_variants.history
    rec["history"] = {"limit": limit, "seeds": [s.seed for s in history], "made": seeds}
    step(rec, "history_use", OPS.use_result_set, index=2)
    rec["history_current_seed"] = bpy.context.scene.texture_variants.current.seed
    step(rec, "history_apply", OPS.apply_variant)
    blend = os.path.join(workdir, "project", "history.blend")
    os.makedirs(os.path.dirname(blend), exist_ok=True)
    names = (material.name, obj.name)
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.open_mainfile(filepath=blend)  # every Python reference to the old data is now invalid
    material = bpy.data.materials[names[0]]
    bpy.context.view_layer.objects.active = bpy.data.objects[names[1]]
    rec["history_reopened"] = {"seeds": [s.seed for s in material.texture_variants.history],
                               "images": all(v.image is not None and tuple(v.image.size) != (0, 0)
                                             for s in material.texture_variants.history for v in s.variants),
                               "invariant": h.recorded_matches_tree()}
    step(rec, "reopened_use", OPS.use_result_set, index=0)
    step(rec, "reopened_apply", OPS.apply_variant)


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    source = shutil.copy(texture, os.path.join(workdir, "gravel.png"))
    wide = os.environ["WIDE_TEXTURE"]
    hashes = {p: h.sha256(p) for p in (source, wide)}
    h.clean_scene()
    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=64, seed=5, randomize_seed=False)
    linked_cases(rec, workdir, source)
    h.set_settings(variants=2)
    binding_and_objects(rec, source)
    detection(rec, source)
    wide_and_history(rec, workdir, source, wide)
    rec["originals_unchanged"] = all(h.sha256(p) == digest for p, digest in hashes.items())


h.Recorder().run(scenario)
