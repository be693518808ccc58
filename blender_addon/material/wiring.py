"""Add Missing Maps, in the node tree: which missing maps can be wired, and wiring them.

    roughness  Image Texture -> Principled Roughness
    normal     Image Texture -> Normal Map -> Principled Normal (or an existing Bump's Normal input)
    height     Image Texture -> Bump (Height) -> Principled Normal, a Normal Map made with it chained
               into the Bump's Normal input; or (`height="displacement"`) Image Texture ->
               Displacement (Height) -> the Material Output's Displacement
Every new Image Texture is Non-Color and takes its Vector from where the base colour's node takes
it (a Mapping or UV node), so the maps line up with the base colour. Nothing already in the tree is
unlinked or moved: a map whose socket is taken is left out, and the plan says why.
"""

from dataclasses import dataclass, field

from ..errors import UserError
from . import maps as material_maps

BUMP_DISTANCE = 0.1  # Blender's default of 1 m makes a 0-1 height map a mountain range
DISPLACEMENT_SCALE = 0.1


@dataclass
class Plan:
    maps: list = field(default_factory=list)  # what to derive and wire, in material_maps.DERIVABLE order
    skipped: dict = field(default_factory=dict)  # map name -> why it is left out


def _taken(socket) -> str:
    """Why `socket` cannot take a new link ("" when it is free)."""
    if not socket.is_linked:
        return ""
    return f"{socket.node.name}'s {socket.name} input is already linked from '{socket.links[0].from_node.name}'"


def _normal_socket(maps):
    """Where a new Normal Map goes: an existing Bump's Normal input, else the Principled BSDF's Normal."""
    bump = material_maps.linked_node(maps.bsdf.inputs["Normal"], {"BUMP"})
    return bump.inputs["Normal"] if bump is not None else maps.bsdf.inputs["Normal"]


def plan(material, base_node, height: str = "bump") -> Plan:
    """The missing derivable maps that can be wired into `material` (found from its base colour
    node), with why the others are left out; UserError when there is none."""
    maps = material_maps.find_maps(material, base_node)
    if maps.bsdf is None:
        raise UserError("no_principled", f"The material '{material.name}' has no Principled BSDF",
                        "Add Missing Maps wires maps into a Principled BSDF: add one")
    out = Plan()
    missing = [name for name in material_maps.DERIVABLE if name in maps.missing]
    output = material_maps.material_output(material)
    for name in missing:
        if name == "roughness":
            why = _taken(maps.bsdf.inputs["Roughness"])
        elif name == "normal":
            why = _taken(_normal_socket(maps))
        elif height == "displacement":
            why = _taken(output.inputs["Displacement"]) if output is not None else "the material has no Material Output"
        else:
            why = _taken(maps.bsdf.inputs["Normal"])
            if why:
                why += " (Add Missing Maps with Displacement puts the height there instead)"
        if why:
            out.skipped[name] = why
        else:
            out.maps.append(name)
    if not out.maps:
        reasons = "; ".join(f"{name}: {why}" for name, why in out.skipped.items())
        raise UserError("nothing_missing", f"'{material.name}' has no missing map to add"
                        + (f" that can be wired ({reasons})" if reasons else " (it has height, normal and roughness)"),
                        "unlink the input you want a derived map in, or pick the Displacement option for height")
    return out


def _image_node(tree, base_node, vector, image, row: int):
    node = tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    node.name = image.name
    node.location = (base_node.location.x, base_node.location.y - 300 * row)
    if vector is not None:
        tree.links.new(vector, node.inputs["Vector"])
    return node


def _beside(tree, kind: str, after, dx: int = 250):
    node = tree.nodes.new(kind)
    node.location = (after.location.x + dx, after.location.y)
    return node


def wire(material, base_node, images: dict, height: str = "bump") -> list[str]:
    """New nodes for `images` ({map name: Non-Color image}, from `plan`) linked as the module says;
    returns the names of the nodes made."""
    maps = material_maps.find_maps(material, base_node)
    tree, bsdf = material.node_tree, maps.bsdf
    vector = base_node.inputs["Vector"].links[0].from_socket if base_node.inputs["Vector"].is_linked else None
    made = {name: _image_node(tree, base_node, vector, images[name], row)
            for row, name in enumerate(sorted(images), start=1)}
    if "roughness" in made:
        tree.links.new(made["roughness"].outputs["Color"], bsdf.inputs["Roughness"])
    normal = None
    if "normal" in made:
        normal = _beside(tree, "ShaderNodeNormalMap", made["normal"], 300)
        tree.links.new(made["normal"].outputs["Color"], normal.inputs["Color"])
        made["normal map"] = normal
    if "height" in made and height == "displacement":
        node = made["displacement"] = _beside(tree, "ShaderNodeDisplacement", made["height"], 300)
        node.inputs["Scale"].default_value = DISPLACEMENT_SCALE
        tree.links.new(made["height"].outputs["Color"], node.inputs["Height"])
        tree.links.new(node.outputs["Displacement"], material_maps.material_output(material).inputs["Displacement"])
    elif "height" in made:
        bump = made["bump"] = _beside(tree, "ShaderNodeBump", made["height"], 550)
        bump.inputs["Distance"].default_value = BUMP_DISTANCE
        tree.links.new(made["height"].outputs["Color"], bump.inputs["Height"])
        if normal is not None:
            tree.links.new(normal.outputs["Normal"], bump.inputs["Normal"])
            normal = None
        tree.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    if normal is not None:
        tree.links.new(normal.outputs["Normal"], _normal_socket(maps))
    return [node.name for node in made.values()]
