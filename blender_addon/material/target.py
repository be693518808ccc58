"""Which material and which Image Texture node the add-on works on, and whether it may change them."""

import json

import bpy

from ..errors import UserError
from . import maps


def active_material(context) -> bpy.types.Material:
    obj = context.active_object
    if obj is None:
        raise UserError("no_object", "No active object",
                        "select the object whose material you want variants of (click it in the viewport)")
    material = obj.active_material
    if material is None:
        raise UserError("no_material", f"The object '{obj.name}' has no material",
                        "add a material with an Image Texture node in the Material Properties")
    check_nodes(material)
    return material


def check_nodes(material) -> None:
    if not material.use_nodes or material.node_tree is None:
        raise UserError("no_image", f"The material '{material.name}' does not use nodes",
                        "click Use Nodes in the material and add an Image Texture node")


def base_color_image_node(material):
    """The Image Texture node that feeds a Principled BSDF's Base Color, if any."""
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            found = maps.upstream_image_node(node.inputs["Base Color"])
            if found is not None:
                return found
    return None


def image_nodes(material) -> list:
    """The material's Image Texture nodes (what the node picker lists)."""
    return [n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"] if material.node_tree else []


def find_image_node(material, node_name: str = ""):
    """The chosen node, else the one feeding Base Color, else the active Image Texture node."""
    nodes = material.node_tree.nodes
    if node_name:
        node = nodes.get(node_name)
        if node is None or node.type != "TEX_IMAGE":
            raise UserError("no_image", f"The material '{material.name}' has no Image Texture node named "
                            f"'{node_name}'", "pick another node in the Variants panel, or clear the choice")
        return node
    node = base_color_image_node(material)
    if node is None and nodes.active is not None and nodes.active.type == "TEX_IMAGE":
        node = nodes.active
    if node is None:
        raise UserError("no_image", f"The material '{material.name}' has no Image Texture node feeding Base "
                        "Color, and no Image Texture node is active",
                        "add an Image Texture node with your texture, or click one to make it active")
    return node


TILE_SET_KEY = "texture_variants_tile_set"  # material/tile_set.py's record of the nodes it changed


def source_image(material, node):
    """The texture to make variants of: the original one if a variant is applied to this node or the
    node shows a tile set's atlas."""
    record = material.texture_variants.applied.get(node.name)
    if record is not None and record.original_image is not None:
        return record.original_image
    shown = json.loads(material[TILE_SET_KEY])["nodes"].get(node.name) if TILE_SET_KEY in material else None
    if shown and shown["image"] and bpy.data.images.get(shown["image"]) is not None:
        return bpy.data.images[shown["image"]]
    if node.image is None:
        raise UserError("no_image", f"The Image Texture node '{node.name}' has no image",
                        "open or pick an image in that node")
    return node.image


def resolve(context):
    """(material, node, image): the material's chosen node, else the detected one; UserError says what is missing."""
    return resolve_material(active_material(context))


def resolve_material(material):
    """(material, node, image) of any material, as `resolve` finds them for the active one."""
    check_nodes(material)
    node = find_image_node(material, material.texture_variants.image_node)
    return material, node, source_image(material, node)


def not_editable_reason(material) -> str:
    """Why changes to `material` would not stick ("" when they would): linked or overridden data."""
    if material.library is not None:
        return f"The material '{material.name}' is linked from {material.library.filepath}"
    if material.override_library is not None:
        return f"The material '{material.name}' is a library override (its nodes are the library's)"
    if not material.is_editable:
        return f"The material '{material.name}' cannot be edited"
    return ""


def check_editable(material) -> None:
    """Refuse (before anything changes) to edit linked or overridden materials."""
    reason = not_editable_reason(material)
    if reason:
        raise UserError("linked_data", reason,
                        "make it local (Object > Relations > Make Local > Selected Objects and Data), or apply "
                        "with Local Copy to work on a local copy of the material")
