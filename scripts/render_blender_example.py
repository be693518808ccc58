"""Renders docs/images/blender_render.png: a plane using a baked variant, made through the add-on.

Run by scripts/render_blender_example inside Blender's Python (the bpy wheel, headless):
    .venv-blender/bin/python scripts/render_blender_example.py ZIP TEXTURE WORKDIR OUT.png
It installs the extension zip into an isolated user folder (BLENDER_USER_RESOURCES), makes a
variant of TEXTURE with the operators a user's script would call (generate, apply_variant, bake),
repeats it 2x2 on a plane (the seams are the point) and renders with Cycles on the CPU.
"""

import os
import shutil
import sys

import bpy

zip_path, texture, workdir, out_png = sys.argv[1:5]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)

for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
os.makedirs(os.path.join(workdir, "project", "maps"))
source = shutil.copy(texture, os.path.join(workdir, "project", "maps", os.path.basename(texture)))

bpy.ops.mesh.primitive_plane_add(size=2)
plane = bpy.context.active_object
material = bpy.data.materials.new("Ground")
material.use_nodes = True
nodes, links = material.node_tree.nodes, material.node_tree.links
bsdf = nodes["Principled BSDF"]
bsdf.inputs["Roughness"].default_value = 0.8
image_node = nodes.new("ShaderNodeTexImage")
image_node.image = bpy.data.images.load(source)
mapping = nodes.new("ShaderNodeMapping")
mapping.inputs["Scale"].default_value = (2.0, 2.0, 1.0)  # 2x2 repeats: a seam would show
coords = nodes.new("ShaderNodeTexCoord")
links.new(coords.outputs["UV"], mapping.inputs["Vector"])
links.new(mapping.outputs["Vector"], image_node.inputs["Vector"])
links.new(image_node.outputs["Color"], bsdf.inputs["Base Color"])
plane.data.materials.append(material)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(workdir, "project", "example.blend"))

settings = bpy.context.scene.texture_variants
settings.engine, settings.variants, settings.size = "patch", 1, 256
settings.randomize_seed, settings.seed = False, 11
bpy.ops.texture_variants.generate()
bpy.ops.texture_variants.apply_variant(index=0)
bpy.ops.texture_variants.bake()
baked = bpy.path.abspath(bpy.data.materials["Ground"].node_tree.nodes[image_node.name].image.filepath)
print("baked:", baked)

scene = bpy.context.scene
bpy.ops.object.camera_add(location=(0.0, -2.6, 2.0), rotation=(0.93, 0.0, 0.0))
scene.camera = bpy.context.active_object
bpy.ops.object.light_add(type="SUN", location=(2.0, -2.0, 4.0), rotation=(0.6, 0.2, 0.5))
bpy.context.active_object.data.energy = 3.0
scene.world = scene.world or bpy.data.worlds.new("World")
scene.world.color = (0.05, 0.05, 0.06)
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 16
scene.render.resolution_x, scene.render.resolution_y = 480, 300
scene.render.resolution_percentage = 100
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = out_png
bpy.ops.render.render(write_still=True)
print("rendered:", out_png)
