"""Live tiling preview: the material's textures repeated N times across the object in the viewport,
so the artist sees the repetition (seams, a stone that comes back every metre) without baking, and
then the node tree exactly as it was.

On: every Image Texture node of the material gets a Mapping node (Point, Scale N × N) in front of its
Vector input, fed by what fed that input (or by a new Texture Coordinate node's UV where nothing did:
the Image Texture node's own default). The record, a custom property of the material (so it survives
save and reopen), names the nodes added and what each Vector input was linked from. Off: those nodes
are removed and every Vector input is linked as before. Image nodes inside node groups are left alone.
"""

from __future__ import annotations

import json

from . import links, tile_set
from .target import check_editable

KEY = "texture_variants_tiling_preview"
LABEL = "Tiling Preview"


def is_on(material) -> bool:
    return material is not None and KEY in material


def repeat_of(material) -> int:
    return int(json.loads(material[KEY])["repeat"]) if is_on(material) else 0


def turn_on(material, repeat: int) -> int:
    """Repeat every texture of `material` `repeat` times; returns how many image nodes it affects."""
    check_editable(material)
    tile_set.check_off(material, "the tiling preview")
    tree = material.node_tree
    images = [node for node in tree.nodes if node.type == "TEX_IMAGE"]
    record = {"repeat": repeat, "added": [], "inputs": {}}
    coords = None
    for node in images:
        socket = node.inputs["Vector"]
        source = socket.links[0] if socket.is_linked else None
        record["inputs"][node.name] = links.source_of(socket)
        mapping = tree.nodes.new("ShaderNodeMapping")
        mapping.label = LABEL
        mapping.vector_type = "POINT"
        mapping.inputs["Scale"].default_value = (repeat, repeat, 1.0)
        mapping.location = (node.location.x - 200, node.location.y)
        mapping.hide = True
        if source is not None:
            tree.links.new(source.from_socket, mapping.inputs["Vector"])
        else:
            if coords is None:
                coords = tree.nodes.new("ShaderNodeTexCoord")
                coords.label, coords.hide = LABEL, True
                coords.location = (node.location.x - 400, node.location.y)
            tree.links.new(coords.outputs["UV"], mapping.inputs["Vector"])
        tree.links.new(mapping.outputs["Vector"], socket)
        record["added"].append(mapping.name)
    if coords is not None:
        record["added"].append(coords.name)
    material[KEY] = json.dumps(record)
    return len(images)


def turn_off(material) -> None:
    """Remove what turn_on added and link every Vector input as it was."""
    check_editable(material)
    record = json.loads(material[KEY])
    tree = material.node_tree
    for node_name, source in record["inputs"].items():
        node = tree.nodes.get(node_name)
        if node is None:  # deleted meanwhile: nothing to restore
            continue
        links.relink(tree, node.inputs["Vector"], source)
    links.remove_nodes(tree, record["added"])
    del material[KEY]
