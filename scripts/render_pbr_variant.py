"""Renders two planes side by side, each with a PBR set: base colour, roughness and normal map.

Run by scripts/render_pbr_variant inside Blender's Python (the bpy wheel, headless):
    .venv-blender/bin/python scripts/render_pbr_variant.py ORIGINAL_STEM VARIANT_STEM OUT.png
A set is STEM.png (sRGB) with STEM-roughness.png and STEM-normal.png (Non-Color), as the backend
writes a variant's maps. The material is built here: Image Texture nodes into a Principled BSDF, the
normal map through a Normal Map node; a low grazing sun shows the normals and the roughness.
"""

import math
import sys

import bpy

original, variant, out_png = sys.argv[-3:]

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene


def image_node(nodes, path: str, colorspace: str, x: int, y: int):
    node = nodes.new("ShaderNodeTexImage")
    node.image = bpy.data.images.load(path)
    node.image.colorspace_settings.name = colorspace
    node.location = (x, y)
    return node


def pbr_material(name: str, stem: str):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = nodes["Principled BSDF"]
    colour = image_node(nodes, f"{stem}.png", "sRGB", -600, 300)
    rough = image_node(nodes, f"{stem}-roughness.png", "Non-Color", -600, 0)
    normal = image_node(nodes, f"{stem}-normal.png", "Non-Color", -600, -300)
    normal_map = nodes.new("ShaderNodeNormalMap")
    normal_map.location = (-300, -300)
    links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(rough.outputs["Color"], bsdf.inputs["Roughness"])
    links.new(normal.outputs["Color"], normal_map.inputs["Color"])
    links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return material


for i, (name, stem) in enumerate((("original", original), ("variant", variant))):
    bpy.ops.mesh.primitive_plane_add(size=2, location=(-1.05 + 2.1 * i, 0, 0))
    bpy.context.active_object.data.materials.append(pbr_material(name, stem))

bpy.ops.object.light_add(type="SUN", rotation=(math.radians(62), 0, math.radians(35)))
bpy.context.active_object.data.energy = 4.0
bpy.ops.object.camera_add(location=(0, 0, 5.2))
camera = bpy.context.active_object
camera.data.type = "ORTHO"
camera.data.ortho_scale = 4.3
scene.camera = camera
scene.world = bpy.data.worlds.new("World")
scene.world.use_nodes = True
scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.25

scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 16
scene.cycles.use_denoising = False
scene.render.resolution_x, scene.render.resolution_y = 640, 320
scene.render.resolution_percentage = 100
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = out_png
bpy.ops.render.render(write_still=True)
