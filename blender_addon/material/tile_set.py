"""A Wang tile set in the material (docs/guide/tile-sets.md): the set the backend made (its atlases
and JSON description, `material.texture_variants.tile_set`), put to use and taken out again, and its
layout baked into ordinary tileable images.

Use: one "Wang Layout" group node (wang_group.py) is fed by what fed the texture's Vector input (or
the UV where nothing did); the texture's node and every map node the set has an atlas for read that
atlas through it. The record, a custom property of the material (it survives save and reopen), names
the nodes added and each image node's image, sampling and Vector link before, so Stop puts the tree
back exactly (the originals keep a fake user meanwhile, so saving does not drop them). Maps without an atlas keep repeating their own texture (the report says which).

Bake: Cycles bakes the same group with a period of N×M cells onto a temporary plane in a temporary
scene, one image per atlas: exactly the backend's layout (backend/tileset), tileable because the
cells wrap. Nothing of the artist's scene is touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy

from .. import paths
from ..errors import UserError
from . import links, texture_io, wang_group
from .target import TILE_SET_KEY, check_editable

KEY = TILE_SET_KEY
LABEL = "Wang Layout"
COLOR = "color"  # the atlas of the texture itself; the others are named after their map


def spec_of(material) -> dict:
    """The material's tile set description (the backend's JSON), or {} when it has none."""
    text = material.texture_variants.tile_set.spec if material is not None else ""
    return json.loads(text) if text else {}


def atlases_of(material) -> dict:
    """{atlas name ("color" or a map's name): its image} of the material's tile set."""
    return {entry.name: entry.image for entry in material.texture_variants.tile_set.atlases if entry.image}


def summary(spec: dict) -> str:
    tiles = len(spec.get("tiles", ()))
    return f"{tiles} tiles · {spec['tile_size']} px · {spec['colours']} edge colours · {spec.get('engine', '')}"


def is_on(material) -> bool:
    return material is not None and KEY in material


def check_off(material, doing: str) -> None:
    """Refuse `doing` while the tile set is in use: both change the same Image Texture nodes."""
    if is_on(material):
        raise UserError("tile_set_in_use", f"'{material.name}' shows its Wang tile set, so {doing} cannot change "
                        "its textures", "click Stop Tile Set in the Tile Set section first")


def group_node(material):
    """The material's Wang Layout group node while the tile set is in use, else None."""
    if not is_on(material):
        return None
    return material.node_tree.nodes.get(json.loads(material[KEY])["group"])


def _set_constants(node, spec: dict, atlas) -> None:
    node.inputs["Colours"].default_value = spec["colours"]
    node.inputs["Tile"].default_value = spec["tile_size"]
    node.inputs["Padding"].default_value = spec["padding"]
    node.inputs["Atlas Width"].default_value = atlas.size[0]
    node.inputs["Atlas Height"].default_value = atlas.size[1]


def _check_atlases(spec: dict, atlases: dict) -> None:
    if not spec or COLOR not in atlases:
        raise UserError("no_tile_set", "This material has no tile set", "click Make Tile Set first")
    stride = spec["tile_size"] + 2 * spec["padding"]
    for name, image in atlases.items():
        expected = (spec["columns"] * stride, spec["rows"] * stride)
        if tuple(image.size) != expected:
            raise UserError("tile_set_changed", f"The tile set's {name} atlas '{image.name}' is {image.size[0]}×"
                            f"{image.size[1]}, not {expected[0]}×{expected[1]}", "click Make Tile Set again")


def use(material, node, map_nodes: dict, scale: float, seed: int) -> list[str]:
    """Show the tile set on `material`: its texture `node` and `map_nodes` ({map name: Image Texture
    node}) read their atlases through the layout group. Returns the maps left as they were."""
    check_editable(material)
    if is_on(material):
        raise UserError("tile_set_in_use", f"'{material.name}' already shows its tile set",
                        "change Scale and Seed on the Wang Layout node, or click Stop Tile Set")
    spec, atlases = spec_of(material), atlases_of(material)
    _check_atlases(spec, atlases)
    tree = material.node_tree
    targets = {COLOR: node} | {name: n for name, n in map_nodes.items() if name in atlases}
    socket = node.inputs["Vector"]
    source = socket.links[0] if socket.is_linked else None
    group = tree.nodes.new("ShaderNodeGroup")
    group.node_tree = wang_group.layout_group()
    group.label = LABEL
    group.location = (node.location.x - 240, node.location.y)
    _set_constants(group, spec, atlases[COLOR])
    group.inputs["Scale"].default_value = scale
    group.inputs["Seed"].default_value = seed
    record = {"group": group.name, "added": [group.name], "nodes": {}}
    if source is not None:
        tree.links.new(source.from_socket, group.inputs["Vector"])
    else:
        coords = tree.nodes.new("ShaderNodeTexCoord")
        coords.label, coords.hide = LABEL, True
        coords.location = (group.location.x - 200, group.location.y)
        tree.links.new(coords.outputs["UV"], group.inputs["Vector"])
        record["added"].append(coords.name)
    for name, image_node in targets.items():
        vector = image_node.inputs["Vector"]
        original = image_node.image
        record["nodes"][image_node.name] = {
            "image": original.name if original else None,
            "fake_user": bool(original and original.use_fake_user),
            "interpolation": image_node.interpolation, "extension": image_node.extension,
            "vector": links.source_of(vector)}
        if original is not None:
            original.use_fake_user = True  # kept in the .blend while no node shows it, for Stop
        image_node.image = atlases[name]
        image_node.extension = "EXTEND"  # the padding continues each tile's border: nothing of a neighbour
        tree.links.new(group.outputs["Vector"], vector)
    material[KEY] = json.dumps(record)
    return sorted(set(map_nodes) - set(atlases))


def stop(material) -> None:
    """Put every Image Texture node back as it was (image, sampling, Vector link); remove the group."""
    check_editable(material)
    record = json.loads(material[KEY])
    tree = material.node_tree
    for node_name, was in record["nodes"].items():
        image_node = tree.nodes.get(node_name)
        if image_node is None:  # deleted meanwhile: nothing to restore
            continue
        original = bpy.data.images.get(was["image"]) if was["image"] else None
        if original is not None:
            original.use_fake_user = was.get("fake_user", False)
        image_node.image = original
        image_node.interpolation, image_node.extension = was["interpolation"], was["extension"]
        links.relink(tree, image_node.inputs["Vector"], was["vector"])
    links.remove_nodes(tree, record["added"])
    del material[KEY]


def _bake_scene(material_name: str):
    """A temporary scene with a 1×1 plane whose first UV map spans the image and second the cells."""
    scene = bpy.data.scenes.new(".texture_variants_bake")
    mesh = bpy.data.meshes.new(".texture_variants_bake")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    mesh.uv_layers.new(name="image")
    mesh.uv_layers.new(name="cells")
    obj = bpy.data.objects.new(".texture_variants_bake", mesh)
    scene.collection.objects.link(obj)
    material = bpy.data.materials.new(f".texture_variants_bake {material_name}")
    material.use_nodes = True
    mesh.materials.append(material)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.render.bake.margin = 0
    return scene, obj, material


def _remove_bake_scene(scene, obj, material) -> None:
    mesh = obj.data
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)
    bpy.data.materials.remove(material)
    bpy.data.scenes.remove(scene)


def _wire_bake(material, spec: dict, atlas, cells: tuple[int, int], seed: int, scale_input):
    """Emission of `atlas` through the layout group with a period of `cells`; returns the target node."""
    tree = material.node_tree
    tree.nodes.clear()
    uv = tree.nodes.new("ShaderNodeUVMap")
    uv.uv_map = "cells"
    group = tree.nodes.new("ShaderNodeGroup")
    group.node_tree = wang_group.layout_group()
    _set_constants(group, spec, atlas)
    group.inputs["Scale"].default_value = scale_input
    group.inputs["Seed"].default_value = seed
    group.inputs["Period X"].default_value, group.inputs["Period Y"].default_value = cells
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image, texture.interpolation, texture.extension = atlas, "Closest", "EXTEND"
    emission, output = tree.nodes.new("ShaderNodeEmission"), tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(uv.outputs["UV"], group.inputs["Vector"])
    tree.links.new(group.outputs["Vector"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    target = tree.nodes.new("ShaderNodeTexImage")
    tree.nodes.active = target
    return target


def bake_layout(material, cells: tuple[int, int], seed: int, folder: Path) -> dict[str, Path]:
    """The tile set laid out over `cells` (N×M) with `seed`, one tileable image per atlas written into
    `folder` (new files, at the atlas's depth): {atlas name: file}. Pixel-exact copies of the tiles."""
    spec, atlases = spec_of(material), atlases_of(material)
    _check_atlases(spec, atlases)
    columns, rows = cells
    size = (columns * spec["tile_size"], rows * spec["tile_size"])
    scene, obj, bake_material = _bake_scene(material.name)
    written = {}
    try:
        uv_image, uv_cells = obj.data.uv_layers["image"], obj.data.uv_layers["cells"]
        for loop in obj.data.loops:
            u, v = obj.data.vertices[loop.vertex_index].co.xy
            uv_image.data[loop.index].uv = (u, v)
            uv_cells.data[loop.index].uv = (u * columns, v * rows)
        obj.data.uv_layers.active = uv_image
        for name, image in sorted(atlases.items()):
            raw = bpy.data.images.load(bpy.path.abspath(image.filepath), check_existing=False) \
                if not image.packed_file else image.copy()
            raw.colorspace_settings.name = "Non-Color"  # the file's values, copied, not colour-managed
            result = bpy.data.images.new(f".texture_variants_layout {name}", *size, alpha=True, float_buffer=True)
            result.colorspace_settings.name = "Non-Color"
            try:
                target = _wire_bake(bake_material, spec, raw, cells, seed, 1.0)
                target.image = result
                with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0], active_object=obj,
                                               object=obj, selected_objects=[obj], selected_editable_objects=[obj]):
                    bpy.ops.object.bake(type="EMIT", use_clear=True, margin=0)
                kind = texture_io.bake_kind(image)
                stem = f"{paths.safe_stem(Path(image.filepath).stem or name)}-layout-{columns}x{rows}"
                file = paths.unique_target(folder, stem, texture_io.SUFFIX[kind])
                grey = image.depth == (8 if not image.is_float else 16) or image.depth == 32 and image.is_float
                written[name] = texture_io.save_as(result, file, kind, alpha=texture_io.has_alpha(image),
                                                   channels=1 if grey else None)
            finally:
                bpy.data.images.remove(result)
                bpy.data.images.remove(raw)
    finally:
        _remove_bake_scene(scene, obj, bake_material)
    return written
