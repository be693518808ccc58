"""A material's PBR maps: which Image Texture node feeds each map input of its Principled BSDF.

The one home of the upstream search (material.target uses it for the base colour). From the
Principled BSDF whose Base Color shows the node worked on (else the first one):
    roughness   Roughness
    metallic    Metallic
    normal      Normal, through a Normal Map node (its Color input)
    height      Normal through a Bump node (its Height input; a Bump's own Normal input is followed
                on, so a Normal Map chained into it is found too), or the active Material Output's
                Displacement through a Displacement node (its Height input)
looking through PASS_THROUGH nodes between an image and an input, and through reroutes between
an input and a Normal Map / Bump / Displacement node. Map names are the backend's
(backend/materials/maps.py: "normal" is a normal map, the others non-colour data).

One node is one map: a node that already feeds the base colour (a colour image driving a Bump), or
an earlier map (a packed roughness/metallic texture split by Separate Color), is `shared`, not
sent twice; its variant arrives with the node it is already counted for.
"""

from dataclasses import dataclass, field

from .. import parameters

MAPS = parameters.material_maps()
DERIVABLE = parameters.derivable_maps()  # what Add Missing Maps makes
DIRECT_INPUTS = {"roughness": "Roughness", "metallic": "Metallic"}

# Nodes between an image and a BSDF input that the search looks through (their inputs, in order):
# colour and value adjustments, mixes, ramps, reroutes, mapping, math, and node groups (as a whole).
PASS_THROUGH = {"REROUTE", "HUE_SAT", "MIX", "MIX_RGB", "VALTORGB", "MAPPING", "GROUP", "CURVE_RGB", "GAMMA",
                "BRIGHTCONTRAST", "INVERT", "RGBTOBW", "SEPARATE_COLOR", "COMBINE_COLOR", "MATH", "MAP_RANGE",
                "CLAMP", "CURVE_FLOAT", "SEPARATE_XYZ", "COMBINE_XYZ"}
FACTORS = {"Fac", "Factor"}


def _search_order(node) -> list:
    """A node's linked inputs in the order they are searched: colours first, mix factors last."""
    linked = [s for s in node.inputs if s.is_linked]
    return sorted(linked, key=lambda s: (s.name in FACTORS, s.type != "RGBA"))


STANDS_IN_FOR = "texture_variants_stands_in_for"  # on a node shown in another's place (A/B compare)


def upstream_image_node(socket):
    """The first Image Texture node found upstream of `socket`, depth first through PASS_THROUGH nodes;
    a node standing in for another (A/B compare's temporary nodes) counts as that other one."""
    stack, seen = [socket], set()
    while stack:
        socket = stack.pop()
        for link in socket.links if socket.is_linked else ():
            node = link.from_node
            if node.type == "TEX_IMAGE":
                stand_in = node.get(STANDS_IN_FOR)
                return node.id_data.nodes.get(stand_in, node) if stand_in else node
            if node.type in PASS_THROUGH and node.name not in seen:
                seen.add(node.name)
                stack.extend(reversed(_search_order(node)))
    return None


def linked_node(socket, types: set):
    """The node of one of `types` linked into `socket`, looking through reroutes; None if there is none."""
    seen = set()
    while socket is not None and socket.is_linked:
        node = socket.links[0].from_node
        if node.type in types:
            return node
        if node.type != "REROUTE" or node.name in seen:
            return None
        seen.add(node.name)
        socket = node.inputs[0]
    return None


def principled(material, base_node=None):
    """The Principled BSDF whose Base Color shows `base_node`, else the first one; None without one."""
    bsdfs = [n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"]
    for bsdf in bsdfs:
        if base_node is not None and upstream_image_node(bsdf.inputs["Base Color"]) == base_node:
            return bsdf
    return bsdfs[0] if bsdfs else None


def material_output(material):
    """The active Material Output node, else the first one; None without one."""
    outputs = [n for n in material.node_tree.nodes if n.type == "OUTPUT_MATERIAL"]
    return next((n for n in outputs if n.is_active_output), outputs[0] if outputs else None)


@dataclass(frozen=True)
class Found:
    name: str  # the map's name (MAPS)
    node: object  # its Image Texture node
    via: str  # "direct", "normal_map", "bump" or "displacement"


@dataclass
class MaterialMaps:
    bsdf: object = None
    found: dict = field(default_factory=dict)  # name -> Found
    shared: dict = field(default_factory=dict)  # name -> what its node already is ("base colour" or a map name)

    @property
    def missing(self) -> list[str]:
        return [name for name in MAPS if name not in self.found and name not in self.shared]


def _normal_chain(socket, found: dict) -> None:
    """Normal Map and Bump nodes chained into a Normal input."""
    seen = set()
    node = linked_node(socket, {"NORMAL_MAP", "BUMP"})
    while node is not None and node.name not in seen:
        seen.add(node.name)
        if node.type == "NORMAL_MAP":
            found.setdefault("normal", (upstream_image_node(node.inputs["Color"]), "normal_map"))
            return
        found.setdefault("height", (upstream_image_node(node.inputs["Height"]), "bump"))
        node = linked_node(node.inputs["Normal"], {"NORMAL_MAP", "BUMP"})


def find_maps(material, base_node=None) -> MaterialMaps:
    """The material's maps (see the module docstring); nodes without an image count as missing."""
    bsdf = principled(material, base_node) if material.node_tree is not None else None
    if bsdf is None:
        return MaterialMaps()
    candidates = {name: (upstream_image_node(bsdf.inputs[socket]), "direct") for name, socket in DIRECT_INPUTS.items()}
    _normal_chain(bsdf.inputs["Normal"], candidates)
    output = material_output(material)
    displacement = linked_node(output.inputs["Displacement"], {"DISPLACEMENT"}) if output is not None else None
    if displacement is not None and candidates.get("height", (None,))[0] is None:
        candidates["height"] = (upstream_image_node(displacement.inputs["Height"]), "displacement")
    maps = MaterialMaps(bsdf)
    owners = {base_node.name: "base colour"} if base_node is not None else {}
    for name in MAPS:
        node, via = candidates.get(name, (None, ""))
        if node is None or node.image is None:
            continue
        if node.name in owners:
            maps.shared[name] = owners[node.name]
        else:
            owners[node.name] = name
            maps.found[name] = Found(name, node, via)
    return maps


def chosen(material, maps: MaterialMaps) -> dict:
    """The found maps the user left ticked (`material.texture_variants.send_maps`): name -> Found."""
    wanted = material.texture_variants.send_maps
    return {name: found for name, found in maps.found.items() if name in wanted}
