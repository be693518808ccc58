"""A/B compare without Apply: the picked variant (with every map) shown on the object through
temporary nodes, the original a click away, and the node tree exactly as it was when compare ends.

On: beside each node the variant would change (its base colour's and its maps' Image Texture nodes)
a temporary Image Texture node holds the variant's image, with the node's own settings and Vector
source. Showing the variant moves every link leaving a node to the same output of its temporary
node; showing the original moves them back. Leaving removes the temporary nodes after the links are
back. The record, a custom property of the material (it survives save and reopen), names the
temporary nodes and the links that were moved. Apply leaves compare first.
"""

from __future__ import annotations

import json

from . import tile_set
from .maps import STANDS_IN_FOR
from .target import check_editable

KEY = "texture_variants_compare"
VARIANT, ORIGINAL = "variant", "original"
SETTINGS = ("interpolation", "projection", "projection_blend", "extension")


def showing(material) -> str:
    """"variant", "original", or "" when the material is not being compared."""
    return json.loads(material[KEY])["showing"] if material is not None and KEY in material else ""


def show(material, chosen, which: str) -> None:
    """Show `which` (VARIANT or ORIGINAL) of `chosen`: [(node name, variant image, map name)]."""
    check_editable(material)
    tile_set.check_off(material, "A/B compare")
    tree = material.node_tree
    record = json.loads(material[KEY]) if KEY in material else _begin(material, chosen)
    for name, image, _map in chosen:  # the picked variant may have changed since compare began
        temp = tree.nodes.get(record["temporary"].get(name, ""))
        if temp is not None:
            temp.image = image
    for name, links in record["links"].items():
        original, temp = tree.nodes.get(name), tree.nodes.get(record["temporary"][name])
        if original is None or temp is None:
            continue
        source, target = (original, temp) if which == VARIANT else (temp, original)
        _move(tree, source, target, links)
    record["showing"] = which
    material[KEY] = json.dumps(record)


def leave(material) -> bool:
    """The original shown and the temporary nodes gone; False when the material was not compared."""
    if material is None or KEY not in material:
        return False
    record = json.loads(material[KEY])
    tree = material.node_tree
    for name, links in record["links"].items():
        original, temp = tree.nodes.get(name), tree.nodes.get(record["temporary"][name])
        if original is not None and temp is not None:
            _move(tree, temp, original, links)
    for temp_name in record["temporary"].values():
        temp = tree.nodes.get(temp_name)
        if temp is not None:
            tree.nodes.remove(temp)
    del material[KEY]
    return True


def _begin(material, chosen) -> dict:
    tree = material.node_tree
    record = {"showing": ORIGINAL, "temporary": {}, "links": {}}
    for name, image, map_name in chosen:
        node = tree.nodes[name]
        temp = tree.nodes.new("ShaderNodeTexImage")
        temp.label = f"Compare: {map_name or 'base colour'}"
        temp.image = image
        for setting in SETTINGS:
            setattr(temp, setting, getattr(node, setting))
        temp.location = (node.location.x, node.location.y + 60)
        temp.hide = True
        temp[STANDS_IN_FOR] = name  # what finds the material's nodes still finds the original
        vector = node.inputs["Vector"]
        if vector.is_linked:
            tree.links.new(vector.links[0].from_socket, temp.inputs["Vector"])
        record["temporary"][name] = temp.name
        record["links"][name] = [[link.from_socket.identifier, link.to_node.name, link.to_socket.identifier]
                                 for output in node.outputs for link in output.links]
    return record


def _move(tree, source, target, links) -> None:
    """The recorded links leaving `source` leave the same outputs of `target` instead."""
    for output_id, to_name, to_socket_id in links:
        to_node = tree.nodes.get(to_name)
        if to_node is None:
            continue
        to_socket = next((s for s in to_node.inputs if s.identifier == to_socket_id), None)
        out = next((s for s in target.outputs if s.identifier == output_id), None)
        if to_socket is None or out is None:
            continue
        for link in list(to_socket.links):
            if link.from_node == source:
                tree.links.remove(link)
        tree.links.new(out, to_socket)
