"""The Wang layout node group: texture coordinates in, the coordinates into a tile set's atlas out.

Per cell of the grid (Scale cells per UV unit) it computes the codes of the cell's four edges from
the edge's own integer position, so a cell and its neighbour compute the same code for the edge they
share; the tile with those (N, E, S, W) codes sits at a known place in the atlas (index
((n·c + e)·c + s)·c + w, c² columns, rows counted from the top), and the cell's fraction is offset
into it. Edge codes are Blender's White Noise (3D, Value) of (x, y, 2·seed) for vertical edges and
(x, y, 2·seed + 1) for horizontal ones, times c, floored: the backend's layout (backend/tileset)
computes exactly this, so a baked layout and the material agree pixel for pixel. With Period X/Y
above 0 the cells wrap (x mod X, y mod Y), which makes a baked layout of X×Y cells tile.

One group serves every material (its constants are inputs); it is rebuilt when its layout VERSION
changes.
"""

from __future__ import annotations

import bpy

NAME = "Texture Variants Wang Layout"
VERSION = 1
VERSION_KEY = "texture_variants_wang_version"

# (name, socket type, default): the group's inputs, in order.
INPUTS = (
    ("Vector", "NodeSocketVector", None),
    ("Scale", "NodeSocketFloat", 4.0),
    ("Seed", "NodeSocketFloat", 0.0),
    ("Period X", "NodeSocketFloat", 0.0),
    ("Period Y", "NodeSocketFloat", 0.0),
    ("Colours", "NodeSocketFloat", 2.0),
    ("Tile", "NodeSocketFloat", 256.0),
    ("Padding", "NodeSocketFloat", 8.0),
    ("Atlas Width", "NodeSocketFloat", 1088.0),
    ("Atlas Height", "NodeSocketFloat", 1088.0),
)


class _Builder:
    """Math nodes laid out left to right as they are added."""

    def __init__(self, tree):
        self.tree = tree
        self.column = 0

    def place(self, node):
        node.location = (200 + 160 * (self.column // 8), -120 * (self.column % 8))
        node.hide = True
        self.column += 1
        return node

    def _feed(self, socket, value) -> None:
        if isinstance(value, bpy.types.NodeSocket):
            self.tree.links.new(value, socket)
        else:
            socket.default_value = value

    def math(self, operation: str, a, b=0.0):
        node = self.place(self.tree.nodes.new("ShaderNodeMath"))
        node.operation = operation
        self._feed(node.inputs[0], a)
        self._feed(node.inputs[1], b)
        return node.outputs[0]

    def wrap(self, value, period):
        """value mod period where period > 0, else value (exact for integer-valued floats)."""
        wrapped = self.math("FLOORED_MODULO", value, period)
        on = self.math("GREATER_THAN", period, 0.0)
        return self.math("ADD", value, self.math("MULTIPLY", on, self.math("SUBTRACT", wrapped, value)))

    def code(self, x, y, z, colours):
        """min(c - 1, floor(c · WhiteNoise3D(x, y, z)))."""
        xyz = self.place(self.tree.nodes.new("ShaderNodeCombineXYZ"))
        for socket, value in zip(xyz.inputs, (x, y, z), strict=True):
            self._feed(socket, value)
        noise = self.place(self.tree.nodes.new("ShaderNodeTexWhiteNoise"))
        noise.noise_dimensions = "3D"
        self.tree.links.new(xyz.outputs[0], noise.inputs["Vector"])
        scaled = self.math("FLOOR", self.math("MULTIPLY", noise.outputs["Value"], colours))
        return self.math("MINIMUM", scaled, self.math("SUBTRACT", colours, 1.0))


def _build(tree) -> None:
    tree.nodes.clear()
    tree.interface.clear()
    for name, socket_type, default in INPUTS:
        socket = tree.interface.new_socket(name, in_out="INPUT", socket_type=socket_type)
        if default is not None:
            socket.default_value = default
    tree.interface.new_socket("Vector", in_out="OUTPUT", socket_type="NodeSocketVector")
    group_in = tree.nodes.new("NodeGroupInput")
    group_out = tree.nodes.new("NodeGroupOutput")
    group_in.location = (0, 0)
    b = _Builder(tree)
    get = group_in.outputs
    colours = get["Colours"]

    split = b.place(tree.nodes.new("ShaderNodeSeparateXYZ"))
    scaled = b.place(tree.nodes.new("ShaderNodeVectorMath"))
    scaled.operation = "SCALE"
    tree.links.new(get["Vector"], scaled.inputs[0])
    tree.links.new(get["Scale"], scaled.inputs["Scale"])
    tree.links.new(scaled.outputs["Vector"], split.inputs[0])
    px, py = split.outputs["X"], split.outputs["Y"]
    cell_x, cell_y = b.math("FLOOR", px), b.math("FLOOR", py)
    frac_x, frac_y = b.math("SUBTRACT", px, cell_x), b.math("SUBTRACT", py, cell_y)

    x0 = b.wrap(cell_x, get["Period X"])
    x1 = b.wrap(b.math("ADD", cell_x, 1.0), get["Period X"])
    y0 = b.wrap(cell_y, get["Period Y"])
    y1 = b.wrap(b.math("ADD", cell_y, 1.0), get["Period Y"])
    vertical = b.math("MULTIPLY", get["Seed"], 2.0)
    horizontal = b.math("ADD", vertical, 1.0)
    west, east = b.code(x0, y0, vertical, colours), b.code(x1, y0, vertical, colours)
    south, north = b.code(x0, y0, horizontal, colours), b.code(x0, y1, horizontal, colours)

    index = north
    for code in (east, south, west):
        index = b.math("ADD", b.math("MULTIPLY", index, colours), code)
    columns = b.math("MULTIPLY", colours, colours)
    column = b.math("FLOORED_MODULO", index, columns)
    row = b.math("FLOOR", b.math("DIVIDE", index, columns))

    stride = b.math("ADD", get["Tile"], b.math("MULTIPLY", get["Padding"], 2.0))
    left = b.math("ADD", b.math("MULTIPLY", column, stride), get["Padding"])
    u = b.math("DIVIDE", b.math("ADD", left, b.math("MULTIPLY", frac_x, get["Tile"])), get["Atlas Width"])
    top = b.math("ADD", b.math("MULTIPLY", row, stride), get["Padding"])
    down = b.math("MULTIPLY", b.math("SUBTRACT", 1.0, frac_y), get["Tile"])
    v = b.math("SUBTRACT", 1.0, b.math("DIVIDE", b.math("ADD", top, down), get["Atlas Height"]))

    out = b.place(tree.nodes.new("ShaderNodeCombineXYZ"))
    tree.links.new(u, out.inputs["X"])
    tree.links.new(v, out.inputs["Y"])
    group_out.location = (200 + 160 * (b.column // 8 + 1), 0)
    tree.links.new(out.outputs[0], group_out.inputs["Vector"])


def layout_group():
    """The shared node group, built (or rebuilt when its VERSION changed)."""
    tree = bpy.data.node_groups.get(NAME)
    if tree is None or tree.bl_idname != "ShaderNodeTree":
        tree = bpy.data.node_groups.new(NAME, "ShaderNodeTree")
    if tree.get(VERSION_KEY) != VERSION:
        _build(tree)
        tree[VERSION_KEY] = VERSION
    return tree
