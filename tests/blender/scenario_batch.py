"""Generate for Selected in real Blender (background mode: synchronous), patch engine, the real backend:
three materials with three textures get three result sets, each in its own material's history; Apply
on one of them (the Grass material also has a roughness map: it travels with its job and Apply shows
its variant too); a material without an image texture is reported while the others get theirs.
Extra arguments: the three texture files (brick, grass, gravel). With MEASURE_REPEATS set, also times
Generate for Selected against three single Generates, interleaved."""

import array
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

NAMES = ("Brick", "Grass", "Gravel")


def select(objects, active):
    for obj in bpy.data.objects:
        obj.select_set(obj in objects)
    bpy.context.view_layer.objects.active = active


def mean_rgb(image):
    w, hgt = image.size
    px = array.array("f", bytes(4 * w * hgt * 4))
    image.pixels.foreach_get(px)
    return [sum(px[c::4]) / (w * hgt) for c in range(3)]


def history(material):
    sets = material.texture_variants.history
    return [{"source": s.source.name if s.source else None, "node": s.node_name, "engine": s.engine,
             "variants": [{"image": v.image.name, "seed": v.seed, "path": v.path, "size": list(v.image.size),
                           "mean": mean_rgb(v.image), "maps": {m.name: m.image.name for m in v.maps}}
                          for v in s.variants]} for s in sets]


def add_roughness(material, path):
    """An Image Texture (Non-Color) -> Principled Roughness, named "Roughness"."""
    tree = material.node_tree
    image = bpy.data.images.load(path, check_existing=False)
    image.name = material.name + " roughness"
    image.colorspace_settings.name = "Non-Color"
    node = tree.nodes.new("ShaderNodeTexImage")
    node.name, node.image = "Roughness", image
    tree.links.new(node.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Roughness"])
    return image


def materials_state(materials):
    """The node trees and the add-on's record: what generating must not change."""
    return {m.name: h.snapshot(m)[m.name] for m in materials}


def newest_manifest():
    jobs = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")
    folders = sorted(f for f in os.listdir(jobs) if os.path.isfile(os.path.join(jobs, f, "manifest.jsonl")))
    with open(os.path.join(jobs, folders[-1], "manifest.jsonl"), encoding="utf-8") as f:
        return os.path.join(jobs, folders[-1]), [json.loads(line) for line in f]


def three_materials(rec, textures):
    objects = []
    for name, path in zip(NAMES, textures, strict=True):
        obj, material, _node = h.plane_with_image(bpy.data.images.load(path), name)
        objects.append(obj)
    materials = [o.active_material for o in objects]
    rec["roughness_source"] = add_roughness(materials[1], textures[2]).name
    rec["sources"] = {m.name: {"image": h.base_color_image(m), "mean": mean_rgb(bpy.data.images[h.base_color_image(m)])}
                      for m in materials}
    select(objects, objects[0])
    before = materials_state(materials)
    rec["batch"] = h.call(bpy.ops.texture_variants.generate_selected)
    rec["batch_unchanged"] = materials_state(materials) == before  # generating changes no material
    rec["histories"] = {m.name: history(m) for m in materials}
    rec["current"] = bpy.context.scene.texture_variants.current.material.name
    rec["outcomes"] = list(h.addon_module("connection.batch").last_batch)
    folder, rec["manifest"] = newest_manifest()
    rec["manifest_folder_files"] = sorted(os.listdir(folder))

    # Another object's material: the panel offers its variants; shown, picked and applied
    select(objects, objects[1])
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel_other_material"] = layout.calls
    rec["use_grass"] = h.call(bpy.ops.texture_variants.use_result_set, index=0)
    rec["apply_grass"] = h.call(bpy.ops.texture_variants.apply_variant, index=1)
    rec["base_colors_after_apply"] = {m.name: h.base_color_image(m) for m in materials}
    rec["roughness_after_apply"] = materials[1].node_tree.nodes["Roughness"].image.name
    rec["invariant_after_apply"] = h.recorded_matches_tree()
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel_after_apply"] = layout.calls
    return objects


def one_without_texture(rec, textures):
    h.clean_scene()
    objects = [h.plane_with_image(bpy.data.images.load(path), name)[0]
               for name, path in zip(NAMES[:2], textures[:2], strict=True)]
    bpy.ops.mesh.primitive_plane_add(size=2)
    plain = bpy.context.active_object
    plain.name = "Plain"
    material = bpy.data.materials.new("Plain Material")
    material.use_nodes = True  # a Principled BSDF and no Image Texture node
    plain.data.materials.append(material)
    objects.append(plain)
    materials = [o.active_material for o in objects]
    select(objects, plain)
    before = materials_state(materials)
    rec["partial"] = h.call(bpy.ops.texture_variants.generate_selected)
    rec["partial_unchanged"] = materials_state(materials) == before
    rec["partial_histories"] = {m.name: len(m.texture_variants.history) for m in materials}
    rec["partial_sources"] = {m.name: [s.source.name for s in m.texture_variants.history] for m in materials}
    rec["partial_textures"] = {m.name: [h.base_color_image(m)] for m in materials[:2]}
    rec["partial_outcomes"] = list(h.addon_module("connection.batch").last_batch)
    rec["partial_applied"] = [len(m.texture_variants.applied) > 0 for m in materials]
    _folder, rec["partial_manifest"] = newest_manifest()
    select([plain], plain)
    rec["nothing_to_vary"] = h.call(bpy.ops.texture_variants.generate_selected)
    select([], None)
    rec["nothing_selected"] = h.call(bpy.ops.texture_variants.generate_selected)


def measure(rec, textures, repeats: int):
    """Generate for Selected on three materials against three Generates in a row, interleaved: medians (s)."""
    h.clean_scene()
    objects = [h.plane_with_image(bpy.data.images.load(path), name)[0]
               for name, path in zip(NAMES, textures, strict=True)]
    select(objects, objects[0])
    h.set_settings(size=int(os.environ.get("MEASURE_SIZE", "64")))
    bpy.ops.texture_variants.generate()  # the backend is started and warm before either is timed
    batch, singles = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        bpy.ops.texture_variants.generate_selected()
        batch.append(time.perf_counter() - started)
        started = time.perf_counter()
        for obj in objects:
            select(objects, obj)
            bpy.ops.texture_variants.generate()
        singles.append(time.perf_counter() - started)
    rec["measure"] = {"batch": batch, "singles": singles, "batch_median": statistics.median(batch),
                      "singles_median": statistics.median(singles), "load": os.getloadavg()}


def scenario(rec):
    zip_path, _workdir, _ = h.args()
    textures = sys.argv[4:7]
    h.install(zip_path)
    h.clean_scene()
    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=64, seed=3, randomize_seed=False)
    three_materials(rec, textures)
    rec["seed_after"] = bpy.context.scene.texture_variants.seed
    one_without_texture(rec, textures)
    if os.environ.get("MEASURE_REPEATS"):
        measure(rec, textures, int(os.environ["MEASURE_REPEATS"]))


h.Recorder().run(scenario)
