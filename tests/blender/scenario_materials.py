"""Whole materials in Blender (docs/guide/materials.md, "Whole materials"): a material with base colour, roughness,
normal (16-bit, through a Normal Map) and height (through a Bump) images; Generate with the patch
engine through the real backend -> every variant carries its maps -> Apply -> Revert -> Apply ->
Bake -> save and reopen -> a map node deleted: Apply refused. Map discovery through Mapping,
Reroute, Hue/Saturation, Mix, Math, Bump and Displacement; Add Missing Maps on a base colour alone.
See harness.py for how it is run; the set's files are made by the pytest side."""

import array
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants
MAPS = ("roughness", "normal", "height")


def step(rec, case, op, **kwargs):
    """Run an operator once; record its outcome, whether anything changed, and the invariant."""
    before = h.snapshot()
    outcome = h.call(op, **kwargs)
    outcome["unchanged"] = h.snapshot() == before
    outcome["invariant"] = h.recorded_matches_tree()
    rec[case] = outcome
    return outcome


def _image(path, non_color=False):
    image = bpy.data.images.load(path)
    if non_color:
        image.colorspace_settings.name = "Non-Color"
    return image


def _tex(tree, name, image, location, vector=None):
    node = tree.nodes.new("ShaderNodeTexImage")
    node.name, node.image, node.location = name, image, location
    if vector is not None:
        tree.links.new(vector, node.inputs["Vector"])
    return node


def _mapping(tree):
    coords, mapping = tree.nodes.new("ShaderNodeTexCoord"), tree.nodes.new("ShaderNodeMapping")
    mapping.name = "Mapping"
    tree.links.new(coords.outputs["UV"], mapping.inputs["Vector"])
    return mapping.outputs["Vector"]


def full_material(folder):
    """Base Color, Roughness, Normal Map -> Bump (Normal) and Bump (Height) -> Normal, all through one Mapping."""
    obj, material, base = h.plane_with_image(_image(os.path.join(folder, "brick.png")), "Brick")
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    vector = _mapping(tree)
    tree.links.new(vector, base.inputs["Vector"])
    rough = _tex(tree, "Roughness", _image(os.path.join(folder, "brick_rough.png"), True), (-600, -300), vector)
    normal = _tex(tree, "Normal", _image(os.path.join(folder, "brick_nrm16.png"), True), (-600, -600), vector)
    height = _tex(tree, "Height", _image(os.path.join(folder, "brick_height.png"), True), (-600, -900), vector)
    normal_map, bump = tree.nodes.new("ShaderNodeNormalMap"), tree.nodes.new("ShaderNodeBump")
    tree.links.new(rough.outputs["Color"], bsdf.inputs["Roughness"])
    tree.links.new(normal.outputs["Color"], normal_map.inputs["Color"])
    tree.links.new(normal_map.outputs["Normal"], bump.inputs["Normal"])
    tree.links.new(height.outputs["Color"], bump.inputs["Height"])
    tree.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    return obj, material


def shown(material) -> dict:
    """What each map node shows: image name, colour space, file path."""
    nodes = material.node_tree.nodes
    return {name: [nodes[name].image.name, nodes[name].image.colorspace_settings.name, nodes[name].image.filepath]
            for name in ("Texture", "Roughness", "Normal", "Height")}


def variant_record(variant) -> dict:
    return {"image": variant.image.name, "path": variant.path,
            "maps": {m.name: {"image": m.image.name, "path": m.path, "file": bpy.path.abspath(m.image.filepath),
                              "colorspace": m.image.colorspace_settings.name, "size": list(m.image.size),
                              "deep": m.image.is_float} for m in variant.maps}}


def pixels(image) -> array.array:
    buf = array.array("f", bytes(4 * 4 * image.size[0] * image.size[1]))
    image.pixels.foreach_get(buf)
    return buf


def timed_generates(rec, material):
    """Generate without maps and with the three, interleaved (after a warm-up): seconds each."""
    state, times = material.texture_variants, {"none": [], "three": []}
    for label in ("none", "three", "none", "three", "none", "three"):
        state.send_maps = set() if label == "none" else {"roughness", "normal", "height", "metallic"}
        start = time.perf_counter()
        outcome = h.call(OPS.generate)
        times[label].append(time.perf_counter() - start)
        assert outcome["error"] is None, outcome
    rec["generate_seconds"] = times
    rec["maps_without"] = [len(v.maps) for v in h.addon_module("material.results").use_history(
        bpy.context.scene.texture_variants, material, 1).variants]
    h.call(OPS.use_result_set, index=0)


def workflow(rec, project, folder):
    obj, material = full_material(folder)
    blend = os.path.join(project, "brick.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    material = bpy.data.materials[material.name]
    found = h.addon_module("material.maps").find_maps(material, material.node_tree.nodes["Texture"])
    rec["found"] = {name: [f.node.name, f.via] for name, f in found.found.items()}
    rec["missing"], rec["originals"] = found.missing, shown(material)
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel"] = layout.calls
    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=128, seed=3, randomize_seed=False)
    timed_generates(rec, material)
    current = bpy.context.scene.texture_variants.current
    rec["variants"] = [variant_record(v) for v in current.variants]
    rec["map_nodes"] = {e.name: e.node_name for e in current.map_nodes}
    originals = {name: node.image for name, node in material.node_tree.nodes.items() if node.type == "TEX_IMAGE"}
    step(rec, "apply", OPS.apply_variant, index=1)
    rec["applied"] = shown(material)
    rec["original_fake_users"] = {name: image.use_fake_user for name, image in originals.items()}
    step(rec, "revert", OPS.revert)
    rec["reverted_same_datablocks"] = all(material.node_tree.nodes[name].image == image
                                          for name, image in originals.items())
    rec["reverted"] = shown(material)
    rec["fake_users_after_revert"] = {name: image.use_fake_user for name, image in originals.items()}
    step(rec, "apply_again", OPS.apply_variant, index=0)
    applied = {name: pixels(material.node_tree.nodes[name].image) for name in ("Texture", "Roughness", "Normal", "Height")}
    start = time.perf_counter()
    step(rec, "bake", OPS.bake)
    rec["bake_seconds"] = time.perf_counter() - start
    rec["baked"] = shown(material)
    rec["baked_files"] = {name: bpy.path.abspath(material.node_tree.nodes[name].image.filepath) for name in applied}
    rec["baked_pixels_equal"] = {name: max(abs(a - b) for a, b in zip(applied[name], pixels(
        material.node_tree.nodes[name].image), strict=True)) for name in applied}
    bpy.ops.wm.save_mainfile()
    names = (material.name, obj.name)
    bpy.ops.wm.open_mainfile(filepath=blend)  # every Python reference to the old data is now invalid
    material = bpy.data.materials[names[0]]
    bpy.context.view_layer.objects.active = bpy.data.objects[names[1]]
    rec["reopened"] = shown(material)
    rec["reopened_invariant"] = h.recorded_matches_tree()
    rec["reopened_records"] = sorted(r.name for r in material.texture_variants.applied)
    refused_apply(rec, material)


def refused_apply(rec, material):
    """A map's node deleted after Generate: Apply is refused and nothing changes."""
    step(rec, "revert_reopened", OPS.revert)
    tree = material.node_tree
    tree.nodes.remove(tree.nodes["Height"])
    step(rec, "apply_without_height_node", OPS.apply_variant, index=0)


def discovery(rec, folder):
    """Maps found through Mapping, Reroute, Hue/Saturation, Mix, Math and a Displacement node; a
    colour image driving a Bump counts as the base colour's node."""
    h.clean_scene()
    _, material, base = h.plane_with_image(_image(os.path.join(folder, "brick.png")), "Through")
    tree, bsdf = material.node_tree, material.node_tree.nodes["Principled BSDF"]
    vector = _mapping(tree)
    tree.links.new(vector, base.inputs["Vector"])
    hue, mix = tree.nodes.new("ShaderNodeHueSaturation"), tree.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    tree.links.new(base.outputs["Color"], hue.inputs["Color"])
    tree.links.new(hue.outputs["Color"], mix.inputs["A"])
    tree.links.new(mix.outputs["Result"], bsdf.inputs["Base Color"])
    rough = _tex(tree, "R", _image(os.path.join(folder, "brick_rough.png"), True), (0, 0), vector)
    reroute, math = tree.nodes.new("NodeReroute"), tree.nodes.new("ShaderNodeMath")
    tree.links.new(rough.outputs["Color"], reroute.inputs[0])
    tree.links.new(reroute.outputs[0], bsdf.inputs["Roughness"])
    metal = _tex(tree, "M", _image(os.path.join(folder, "brick_height.png"), True), (0, 0), vector)
    tree.links.new(metal.outputs["Color"], math.inputs[0])
    tree.links.new(math.outputs[0], bsdf.inputs["Metallic"])
    normal = _tex(tree, "N", _image(os.path.join(folder, "brick_nrm16.png"), True), (0, 0), vector)
    normal_map, reroute2 = tree.nodes.new("ShaderNodeNormalMap"), tree.nodes.new("NodeReroute")
    tree.links.new(normal.outputs["Color"], normal_map.inputs["Color"])
    tree.links.new(normal_map.outputs["Normal"], reroute2.inputs[0])
    tree.links.new(reroute2.outputs[0], bsdf.inputs["Normal"])
    height = _tex(tree, "H", _image(os.path.join(folder, "brick_height.png"), True), (0, 0), vector)
    displacement = tree.nodes.new("ShaderNodeDisplacement")
    tree.links.new(height.outputs["Color"], displacement.inputs["Height"])
    tree.links.new(displacement.outputs["Displacement"], tree.nodes["Material Output"].inputs["Displacement"])
    maps = h.addon_module("material.maps")
    found = maps.find_maps(material, h.addon_module("material.target").resolve(bpy.context)[1])
    rec["through"] = {"found": {n: [f.node.name, f.via] for n, f in found.found.items()}, "missing": found.missing,
                      "base": h.addon_module("material.target").resolve(bpy.context)[1].name}
    _, colour_bump, base2 = h.plane_with_image(base.image, "ColourBump")
    tree = colour_bump.node_tree
    bump = tree.nodes.new("ShaderNodeBump")
    tree.links.new(base2.outputs["Color"], bump.inputs["Height"])
    tree.links.new(bump.outputs["Normal"], tree.nodes["Principled BSDF"].inputs["Normal"])
    found = maps.find_maps(colour_bump, base2)
    rec["colour_bump"] = {"found": sorted(found.found), "shared": found.shared, "missing": found.missing}


def add_missing(rec, folder):
    """Add Missing Maps on a base colour alone (through a Mapping node): three maps wired, nothing else
    touched; with Displacement; and again: nothing left to add."""
    h.clean_scene()
    _, material, base = h.plane_with_image(_image(os.path.join(folder, "brick.png")), "Bare")
    tree = material.node_tree
    tree.links.new(_mapping(tree), base.inputs["Vector"])
    before = h.snapshot(material)[material.name]
    step(rec, "add_missing", OPS.add_missing_maps)
    after = h.snapshot(material)[material.name]
    rec["add_missing_tree"] = {"before": before, "after": after, "base": base.image.name, "new_images": {
        n.name: [n.image.name, n.image.colorspace_settings.name, list(n.image.size),
                 bpy.path.abspath(n.image.filepath), n.image.packed_file is not None]
        for n in tree.nodes if n.type == "TEX_IMAGE" and n != base}}
    step(rec, "add_missing_again", OPS.add_missing_maps)
    _, other, base2 = h.plane_with_image(base.image, "BareDisplacement")
    step(rec, "add_missing_displacement", OPS.add_missing_maps, height="displacement")
    rec["displacement_links"] = h.snapshot(other)[other.name]["links"]
    rec["operator_options"] = sorted(bpy.types.TEXTURE_VARIANTS_OT_add_missing_maps.bl_options)


def scenario(rec):
    zip_path, workdir, folder = h.args()
    h.install(zip_path)
    project = os.path.join(workdir, "project")
    os.makedirs(os.path.join(project, "maps"))
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), os.path.join(project, "maps", name))
    folder = os.path.join(project, "maps")
    hashes = {name: h.sha256(os.path.join(folder, name)) for name in os.listdir(folder)}
    h.clean_scene()
    workflow(rec, project, folder)
    discovery(rec, folder)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "add.blend"))  # derived maps go to variants/
    add_missing(rec, folder)
    rec["originals_unchanged"] = {name: h.sha256(os.path.join(folder, name)) == digest for name, digest in hashes.items()}
    rec["project_files"] = sorted(os.path.relpath(os.path.join(d, f), project) for d, _, fs in os.walk(project)
                                  for f in fs)


h.Recorder().run(scenario)
