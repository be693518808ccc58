"""Which material and which Image Texture node the add-on works on."""

import bpy

from .errors import UserError


def active_material(context) -> bpy.types.Material:
    obj = context.active_object
    if obj is None:
        raise UserError("no_object", "No active object",
                        "select the object whose material you want variants of (click it in the viewport)")
    material = obj.active_material
    if material is None:
        raise UserError("no_material", f"The object '{obj.name}' has no material",
                        "add a material with an Image Texture node in the Material Properties")
    if not material.use_nodes or material.node_tree is None:
        raise UserError("no_image", f"The material '{material.name}' does not use nodes",
                        "click Use Nodes in the material and add an Image Texture node")
    return material


def _upstream_image_node(socket):
    """The Image Texture node feeding `socket`, looking through reroutes."""
    while socket.is_linked:
        node = socket.links[0].from_node
        if node.type == "TEX_IMAGE":
            return node
        if node.type != "REROUTE":
            return None
        socket = node.inputs[0]
    return None


def base_color_image_node(material):
    """The Image Texture node that feeds a Principled BSDF's Base Color, if any."""
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            found = _upstream_image_node(node.inputs["Base Color"])
            if found is not None:
                return found
    return None


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


def source_image(material, node):
    """The texture to make variants of: the original one if a variant is applied to this node."""
    state = material.texture_variants
    if state.original_image is not None and state.node_name == node.name:
        return state.original_image
    if node.image is None:
        raise UserError("no_image", f"The Image Texture node '{node.name}' has no image",
                        "open or pick an image in that node")
    return node.image


def resolve(context):
    """(material, node, image) for the panel's settings; raises UserError saying what is missing."""
    material = active_material(context)
    node = find_image_node(material, context.scene.texture_variants.image_node)
    return material, node, source_image(material, node)
