"""Runs inside real Blender (the bpy wheel, headless): helpers for the scenario scripts.

A scenario script is started by tests/blender/conftest.py as
    .venv-blender/bin/python tests/blender/scenario_X.py OUT.json ZIP WORKDIR [TEXTURE]
with BLENDER_USER_RESOURCES pointing at an empty folder, installs the built extension zip through
Blender's extension API, drives it as a user's script would, and writes what it observed to
OUT.json for the pytest side to check. Operators are called exactly as in a user's script.
"""

import hashlib
import json
import os
import sys
import traceback

import bpy

MODULE = "bl_ext.user_default.texture_variants"


class Recorder:
    """Collects observations; written to the output file even when the scenario fails midway."""

    def __init__(self):
        self.out_path = sys.argv[1]
        self.data = {}

    def __setitem__(self, key, value):
        self.data[key] = value
        self.flush()

    def __getitem__(self, key):
        return self.data[key]

    def flush(self):
        with open(self.out_path, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1, default=str)

    def run(self, scenario):
        try:
            scenario(self)
        except BaseException:
            self["crash"] = traceback.format_exc()
            raise
        finally:
            self.flush()


def args():
    """(zip, workdir, texture or None) from the command line."""
    rest = sys.argv[2:]
    return rest[0], rest[1], rest[2] if len(rest) > 2 else None


def install(zip_path: str) -> str:
    """Install and enable the zip the way Blender's "Install from Disk" does."""
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert MODULE in bpy.context.preferences.addons, sorted(bpy.context.preferences.addons.keys())
    return MODULE


def addon_module(name: str):
    return sys.modules[f"{MODULE}.{name}"]


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def call(op, **kwargs) -> dict:
    """Run an operator as a script does; {"result": ..., "error": message or None}."""
    try:
        return {"result": sorted(op(**kwargs)), "error": None}
    except RuntimeError as e:  # an operator that reports an error raises here, with its message
        return {"result": None, "error": str(e)}


def clean_scene():
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for material in list(bpy.data.materials):
        bpy.data.materials.remove(material)


def plane_with_image(image, name="Textured"):
    """A plane whose material has Image Texture -> Principled BSDF Base Color; made active."""
    bpy.ops.mesh.primitive_plane_add(size=2)
    obj = bpy.context.active_object
    obj.name = name
    material = bpy.data.materials.new(name + " Material")
    material.use_nodes = True
    nodes = material.node_tree.nodes
    bsdf = nodes["Principled BSDF"]
    tex = nodes.new("ShaderNodeTexImage")
    tex.name = "Texture"
    tex.image = image
    material.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.append(material)
    return obj, material, tex


def _image(path, non_color=False):
    image = bpy.data.images.load(path)
    if non_color:
        image.colorspace_settings.name = "Non-Color"
    return image


def material_with_maps(folder):
    """A plane named Wall: wall.png -> Base Color, wall_rough.png -> Roughness, wall_nrm16.png through a
    Normal Map -> Normal (nodes "Texture", "Roughness", "Normal"); returns its material."""
    _obj, material, _base = plane_with_image(_image(os.path.join(folder, "wall.png")), "Wall")
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    for name, file in (("Roughness", "wall_rough.png"), ("Normal", "wall_nrm16.png")):
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name, node.image = name, _image(os.path.join(folder, file), True)
    normal_map = tree.nodes.new("ShaderNodeNormalMap")
    tree.links.new(tree.nodes["Roughness"].outputs["Color"], bsdf.inputs["Roughness"])
    tree.links.new(tree.nodes["Normal"].outputs["Color"], normal_map.inputs["Color"])
    tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return material


def tree_structure(material) -> dict:
    """The node tree as data: every node (type, label, location, inputs' values, an image node's image,
    sampling and extension) and every link."""
    tree = material.node_tree
    nodes = {}
    for node in tree.nodes:
        values = {}
        for socket in node.inputs:
            value = getattr(socket, "default_value", None)
            values[socket.identifier] = [round(v, 6) for v in value] if hasattr(value, "__len__") else value
        extra = [node.image.name if node.image else None, node.interpolation, node.extension] \
            if node.type == "TEX_IMAGE" else []
        nodes[node.name] = [node.bl_idname, node.label, [round(c, 3) for c in node.location], values, extra]
    links = sorted([link.from_node.name, link.from_socket.identifier, link.to_node.name, link.to_socket.identifier]
                   for link in tree.links)
    return {"nodes": nodes, "links": links}


def base_color_image(material):
    bsdf = material.node_tree.nodes["Principled BSDF"]
    link = bsdf.inputs["Base Color"].links[0]
    return link.from_node.image.name if link.from_node.image else None


def snapshot(material=None) -> dict:
    """Everything an operator might change about materials and images, to compare before/after."""
    materials = [material] if material is not None else list(bpy.data.materials)
    out = {"images": sorted((i.name, i.filepath, i.source, i.use_fake_user) for i in bpy.data.images
                            if not i.name.startswith("."))}
    for m in materials:
        tree = m.node_tree
        out[m.name] = {
            "nodes": sorted((n.name, n.type, getattr(getattr(n, "image", None), "name", None)) for n in tree.nodes)
            if tree else None,
            "links": sorted((ln.from_node.name, ln.from_socket.identifier, ln.to_node.name, ln.to_socket.identifier)
                            for ln in tree.links) if tree else None,
            "state": sorted((r.name, r.map_name, r.original_image.name if r.original_image else None,
                             r.applied_image.name if r.applied_image else None) for r in m.texture_variants.applied),
        }
    return out


def set_settings(**values):
    settings = bpy.context.scene.texture_variants
    for key, value in values.items():
        setattr(settings, key, value)
    return settings


def image_pixels(image):
    import array

    w, h = image.size
    buf = array.array("f", bytes(4 * w * h * 4))
    image.pixels.foreach_get(buf)
    return buf


class CheckingLayout:
    """Stands in for bpy.types.UILayout (there is no UI headless) and checks each call against
    UILayout's RNA definition: the function exists, its keyword arguments exist, the properties
    drawn exist on their data, and the operators exist. Records (function, text) for the test, and in
    `greyed` what was drawn in a layout made inactive or disabled (itself or a parent), and in `labels`
    what the artist reads on each control: (kind, what it is, its text)."""

    FUNCTIONS = bpy.types.UILayout.bl_rna.functions
    PROPERTIES = bpy.types.UILayout.bl_rna.properties

    def __init__(self, calls=None, greyed=None, inactive=False, labels=None):
        object.__setattr__(self, "calls", [] if calls is None else calls)
        object.__setattr__(self, "greyed", [] if greyed is None else greyed)
        object.__setattr__(self, "labels", [] if labels is None else labels)
        object.__setattr__(self, "_inactive", inactive)

    def __setattr__(self, name, value):
        assert name in self.PROPERTIES, f"UILayout has no property {name}"
        if name in ("active", "enabled") and not value:
            object.__setattr__(self, "_inactive", True)

    def __getattr__(self, name):
        function = self.FUNCTIONS.get(name)
        assert function is not None, f"UILayout has no function {name}"
        params = [p.identifier for p in function.parameters if not p.is_output]

        def call(*args, **kwargs):
            assert len(args) <= len(params), (name, args)
            unknown = set(kwargs) - set(params)
            assert not unknown, f"UILayout.{name} has no parameter(s) {unknown}"
            named = dict(zip(params[:len(args)], args, strict=True)) | kwargs
            for data_key, prop_key in (("data", "property"), ("dataptr", "propname"),
                                       ("active_dataptr", "active_propname"), ("search_data", "search_property")):
                if data_key in named and prop_key in named:
                    assert named[prop_key] in named[data_key].bl_rna.properties, (name, named[prop_key])
            if name == "operator":
                category, op = named["operator"].split(".")
                assert op in dir(getattr(bpy.ops, category)), named["operator"]
            shown = {"operator": named.get("operator"), "prop": named.get("property")}.get(
                name, named.get("text", named.get("property", "")))
            self.calls.append((name, shown))
            if self._inactive:
                self.greyed.append((name, shown))
            if name in ("prop", "operator"):
                self.labels.append((name, shown, self._text(name, named)))
            if name == "panel":
                return (CheckingLayout(self.calls, self.greyed, self._inactive, self.labels),
                        CheckingLayout(self.calls, self.greyed, self._inactive, self.labels))
            if name == "operator":
                return OperatorProperties(named["operator"], self.calls)
            return CheckingLayout(self.calls, self.greyed, self._inactive, self.labels)

        return call


    @staticmethod
    def _text(name, named) -> str:
        """The text Blender shows on a prop or operator button: its `text`, else the RNA name/label."""
        if "text" in named:
            return named["text"]
        if name == "prop":
            return named["data"].bl_rna.properties[named["property"]].name
        category, op = named["operator"].split(".")
        return getattr(getattr(bpy.ops, category), op).get_rna_type().name


class OperatorProperties:
    """What UILayout.operator returns: only the operator's own properties can be set; each is recorded as
    ("operator_property", "idname.name=value")."""

    def __init__(self, idname, calls):
        category, op = idname.split(".")
        rna = getattr(getattr(bpy.ops, category), op).get_rna_type()
        object.__setattr__(self, "_rna", rna)
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_calls", calls)

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"{self._idname} has no property {name}"
        self._calls.append(("operator_property", f"{self._idname}.{name}={value}"))


def recorded_matches_tree(materials=None) -> list:
    """The invariant after every operator: what the add-on records about a material equals what its
    node tree shows, node by node (base colour and maps). Returns the mismatches (empty when it holds)."""
    wrong = []
    for m in materials if materials is not None else bpy.data.materials:
        for record in m.texture_variants.applied:
            if record.original_image is None or record.applied_image is None:
                wrong.append((m.name, record.name, "original and applied recorded apart"))
                continue
            node = m.node_tree.nodes.get(record.name) if m.node_tree else None
            shown = node.image if node is not None and node.type == "TEX_IMAGE" else None
            if shown is None or shown != record.applied_image or shown == record.original_image:
                wrong.append((m.name, f"records {record.applied_image.name} applied to {record.name!r}, the node "
                              f"shows {shown.name if shown else None}"))
    return wrong
