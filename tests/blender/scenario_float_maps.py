"""Float maps in Blender (docs/guide/materials.md, "Whole materials"): a material whose height image is a float OpenEXR
with values outside 0-1 (through a Displacement node) -> Generate (patch engine) -> Apply -> the
height node shows a float image with the source's values -> Bake writes a float OpenEXR. And a
non-square texture made at its own size (Match Source) with a normal map and a float height: the
maps come back at the texture's size from the backend (unit normals, the height within its range).
The pytest side makes the files; the OpenEXR is written here, from its float TIFF, by Blender.
See harness.py for how it is run."""

import array
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def write_exr(tiff, exr):
    """The float TIFF's values as a one-channel 32-bit float OpenEXR (Blender's own writer)."""
    image = bpy.data.images.load(tiff)
    image.colorspace_settings.name = "Non-Color"
    scene = bpy.data.scenes.new("exr")
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    settings.file_format, settings.color_depth, settings.color_mode, settings.exr_codec = "OPEN_EXR", "32", "BW", "ZIP"
    image.save_render(exr, scene=scene)
    bpy.data.scenes.remove(scene)
    bpy.data.images.remove(image)


def dump(image, path, channel=0):
    """One channel of the image's pixels as raw float32, rows bottom to top (Blender's order)."""
    buf = h.image_pixels(image)
    with open(path, "wb") as f:
        f.write(array.array("f", buf[channel::4]).tobytes())
    return path


def describe(image, folder, label):
    return {"name": image.name, "float": image.is_float, "colorspace": image.colorspace_settings.name,
            "size": list(image.size), "file": bpy.path.abspath(image.filepath),
            "pixels": dump(image, os.path.join(folder, f"{label}.f32"))}


def material_with(folder, base, height, normal=None, name="Float"):
    """Base colour; float OpenEXR height -> Displacement -> Material Output (left in the colour space
    Blender gives an EXR, Linear Rec.709); optionally a normal map (Non-Color) -> Normal Map -> Normal."""
    obj, material, _ = h.plane_with_image(bpy.data.images.load(os.path.join(folder, base)), name)
    tree = material.node_tree
    node = tree.nodes.new("ShaderNodeTexImage")
    node.name, node.image = "Height", bpy.data.images.load(os.path.join(folder, height))
    displacement = tree.nodes.new("ShaderNodeDisplacement")
    tree.links.new(node.outputs["Color"], displacement.inputs["Height"])
    tree.links.new(displacement.outputs["Displacement"], tree.nodes["Material Output"].inputs["Displacement"])
    if normal is not None:
        image = bpy.data.images.load(os.path.join(folder, normal))
        image.colorspace_settings.name = "Non-Color"
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name, node.image = "Normal", image
        normal_map = tree.nodes.new("ShaderNodeNormalMap")
        tree.links.new(node.outputs["Color"], normal_map.inputs["Color"])
        tree.links.new(normal_map.outputs["Normal"], tree.nodes["Principled BSDF"].inputs["Normal"])
    return obj, material


def float_height(rec, project, folder, dumps):
    _, material = material_with(folder, "brick.png", "height.exr")
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "float.blend"))
    material = bpy.data.materials[material.name]
    source = material.node_tree.nodes["Height"].image
    rec["source"] = describe(source, dumps, "source") | {"format": source.file_format}
    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=128, seed=5, randomize_seed=False)
    rec["generate"] = h.call(OPS.generate)
    variants = bpy.context.scene.texture_variants.current.variants
    rec["variants"] = [{"path": v.path, "maps": {m.name: describe(m.image, dumps, f"v{i}-{m.name}") | {"path": m.path}
                                                 for m in v.maps}} for i, v in enumerate(variants)]
    rec["apply"] = h.call(OPS.apply_variant, index=1)
    rec["applied"] = describe(material.node_tree.nodes["Height"].image, dumps, "applied")
    rec["bake"] = h.call(OPS.bake)
    rec["baked"] = describe(material.node_tree.nodes["Height"].image, dumps, "baked")


def wide(rec, folder, dumps):
    """A 2:1 texture with Match Source: the backend makes it 2:1, the maps come back 2:1."""
    h.clean_scene()
    _, material = material_with(folder, "wide.png", "wide_height.exr", "wide_normal.png", name="Wide")
    h.set_settings(engine="patch", variants=1, size_mode="match", seed=2, randomize_seed=False)
    rec["wide_generate"] = h.call(OPS.generate)
    variant = bpy.context.scene.texture_variants.current.variants[0]
    rec["wide_variant"] = {"size": list(variant.image.size), "maps": {
        m.name: describe(m.image, dumps, f"wide-{m.name}") | {"path": m.path} for m in variant.maps}}
    normal = h.image_pixels(variant.maps["normal"].image)
    lengths = [sum((2 * normal[i + c] - 1) ** 2 for c in range(3)) ** 0.5 for i in range(0, len(normal), 4)]
    rec["wide_normal_length"] = [min(lengths), max(lengths)]
    rec["wide_source_height"] = dump(material.node_tree.nodes["Height"].image, os.path.join(dumps, "wide-source.f32"))


def scenario(rec):
    zip_path, workdir, folder = h.args()
    h.install(zip_path)
    project = os.path.join(workdir, "project")
    dumps = os.path.join(workdir, "dumps")
    os.makedirs(os.path.join(project, "maps"))
    os.makedirs(dumps)
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), os.path.join(project, "maps", name))
    folder = os.path.join(project, "maps")
    write_exr(os.path.join(folder, "height.tif"), os.path.join(folder, "height.exr"))
    write_exr(os.path.join(folder, "wide_height.tif"), os.path.join(folder, "wide_height.exr"))
    hashes = {name: h.sha256(os.path.join(folder, name)) for name in os.listdir(folder)}
    h.clean_scene()
    float_height(rec, project, folder, dumps)
    wide(rec, folder, dumps)
    rec["originals_unchanged"] = {name: h.sha256(os.path.join(folder, name)) == digest for name, digest in hashes.items()}


h.Recorder().run(scenario)
