"""A material's maps in and out of a job: the ticked maps exported beside the base colour for
Generate, and the map files of a finished job loaded as Non-Color images.

Maps are data: they are never colour-managed on the way out (texture_io.export_map) or back in
(Non-Color, the backend's raw values), and keep their depth (16-bit stays 16-bit, float stays float
with its values). They go at their own size (reduced like the texture when larger than the backend
reads); the backend fits them to the texture and writes each variant's maps at the variant's size.
"""

from pathlib import Path

import bpy

from .. import paths
from . import maps as material_maps
from . import storage, texture_io
from . import target as material_target

NON_COLOR = "Non-Color"


def export_chosen(material, node, job_dir, shown: bool = False) -> dict[str, tuple[str, Path]]:
    """The ticked maps of `material` (found from its base colour `node`) written into the job folder:
    {map name: (its node's name, the file)}. A map whose variant is applied is sent as its original,
    or as the node shows it when `shown` (a restyle works on what the material shows)."""
    found = material_maps.chosen(material, material_maps.find_maps(material, node))
    out = {}
    for name, item in found.items():
        image = item.node.image if shown and item.node.image else material_target.source_image(material, item.node)
        out[name] = (item.node.name, texture_io.export_map(image, job_dir, name))
    return out


def request_fields(exported: dict) -> dict:
    """What a request gains for the `exported` maps ({name: (node name, file)}): `maps`."""
    if not exported:
        return {}
    return {"maps": {name: str(path) for name, (_, path) in exported.items()}}


def import_map(path: str, name: str, size: tuple[int, int], folder: Path, stem: str | None = None) -> bpy.types.Image:
    """The backend's map file as a new Non-Color image named `name`, at `size` like its base colour:
    the file itself (copied into `folder`) when it has that size, else resized by Blender at its depth
    (`texture_io.map_kind`: a float map as a float OpenEXR). `stem`: the file's name without suffix
    (default: from `name`), so a variant's maps can share its file's stem."""
    probe = bpy.data.images.load(path, check_existing=False)
    same_size, kind = tuple(probe.size) == tuple(size), texture_io.map_kind(probe)
    bpy.data.images.remove(probe)
    if not same_size:
        file = texture_io.import_variant(path, name, None, {"kind": kind}, size, folder, colorspace=NON_COLOR,
                                         stem=stem)
    elif Path(path).parent == Path(folder):
        file = Path(path)
    else:
        target = paths.unique_target(folder, stem or paths.safe_stem(name), Path(path).suffix.lower())
        file = paths.copy_new_file(path, target)
    image = bpy.data.images.load(str(file), check_existing=False)
    image.name = name
    image.colorspace_settings.name = NON_COLOR
    return image


def load_maps(variant, files: dict, size: tuple[int, int], folder: Path, pack: bool, stem: str | None = None) -> None:
    """A result entry's `maps` ({name: path}) into `variant.maps`, each named "<variant> <map>" (and its
    file "<stem>_<map>", beside the variant's own file "<stem>.png")."""
    for name, path in sorted(files.items()):
        image = import_map(path, f"{variant.name} {name}", size, folder, f"{stem}_{name}" if stem else None)
        storage.settle(image, pack)
        item = variant.maps.add()
        item.name, item.image, item.path = name, image, path


def copy_maps(source, target) -> None:
    """A variant's maps onto another variant entry (the images are shared, not copied)."""
    target.maps.clear()
    for m in source.maps:
        item = target.maps.add()
        item.name, item.image, item.path = m.name, m.image, m.path


def set_map_nodes(result_set, nodes: dict) -> None:
    """Record which node each map of a result set was made from ({map name: node name})."""
    result_set.map_nodes.clear()
    for name, node_name in sorted(nodes.items()):
        entry = result_set.map_nodes.add()
        entry.name, entry.node_name = name, node_name
