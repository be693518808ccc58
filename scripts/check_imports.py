"""Import boundaries: blender_addon/ runs inside Blender's Python (bpy, the standard library and the numpy
Blender ships), backend/ runs outside Blender, and inside the add-on the folder a module lives in says
what it may import.

Walks the AST of every module (so an import hidden in a function counts too) and fails with the
offending file and line.

The add-on's units (a folder, or a module beside them) stand in layers, lowest first (ADDON_LAYERS). A
module imports modules of its own unit and of lower layers only: never upward, never sideways (ui/
and operators/ stand side by side, so drawing code imports no operator). The plain units (PLAIN) never
import Blender's modules; as every unit below them is plain too, no bpy reaches them through the
add-on either. ui/ draws only: it defines no operator and runs none.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "blender_addon": {"torch", "diffusers", "transformers", "safetensors", "huggingface_hub", "backend"},
    "backend": {"bpy", "bmesh", "mathutils", "blender_addon", "scripts"},
}
BLENDER = {"bpy", "bmesh", "mathutils", "bpy_extras", "gpu", "addon_utils", "bl_ui", "bl_operators"}

ADDON = "blender_addon"
ADDON_LAYERS = [
    {"errors"},  # the add-on's one error class
    {"paths", "panel_rules", "parameters"},  # where files go; which settings the panel shows; the backend's declarations
    {"pixels", "setup", "connection"},  # pixel rules; Set up Backend; the backend's process, client, jobs
    {"properties", "prefs"},  # Blender data: the settings in the .blend, the preferences as read
    {"material"},  # the material's nodes, maps, images, result sets, files
    {"ui", "operators"},  # drawing; the operators
    {"__init__"},  # registration
]
PLAIN = {"errors", "paths", "panel_rules", "parameters", "pixels", "setup", "connection"}
DRAWING = "ui"


def imported_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def unit_of(path: Path, package: Path) -> str:
    """The unit a module of the add-on belongs to: its folder, or its own name beside the folders."""
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0]


def addon_imports(tree: ast.AST, path: Path, package: Path):
    """(line, unit) for every import of an add-on module by a relative import."""
    here = path.relative_to(package).parent.parts
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.level > 0):
            continue
        if node.level - 1 > len(here):
            yield node.lineno, "<outside the add-on>"
            continue
        target = list(here[:len(here) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
        if target:
            yield node.lineno, target[0]
        else:  # `from . import a, b` at the add-on's top: each name is a unit
            for alias in node.names:
                yield node.lineno, alias.name


def layer_violations(root: Path = ROOT) -> list[str]:
    package = root / ADDON
    layer = {unit: i for i, units in enumerate(ADDON_LAYERS) for unit in units}
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(root)
        unit = unit_of(path, package)
        if unit not in layer:
            found.append(f"{where}:1: {unit} is in no layer of scripts/check_imports.py ADDON_LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if unit in PLAIN:
            found += [f"{where}:{line}: {unit}/ is plain Python and must not import {name}"
                      for line, name in imported_roots(tree) if name in BLENDER]
        for line, other in addon_imports(tree, path, package):
            if other == unit:
                continue
            if other not in layer:
                found.append(f"{where}:{line}: imports {other}, which is in no layer")
            elif layer[other] >= layer[unit]:
                side = "sideways" if layer[other] == layer[unit] else "upward"
                found.append(f"{where}:{line}: {unit} must not import {other} ({side})")
        if unit == DRAWING:
            found += _drawing_violations(tree, where)
    return found


def _drawing_violations(tree: ast.AST, where: Path) -> list[str]:
    """ui/ draws: no Operator class, no bpy.ops call (a button names its operator by bl_idname)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if (isinstance(base, ast.Attribute) and base.attr == "Operator") or (
                        isinstance(base, ast.Name) and base.id == "Operator"):
                    found.append(f"{where}:{node.lineno}: ui/ draws only; the operator {node.name} belongs "
                                 "in operators/")
        elif (isinstance(node, ast.Attribute) and node.attr == "ops" and isinstance(node.value, ast.Name)
              and node.value.id == "bpy"):
            found.append(f"{where}:{node.lineno}: ui/ draws only and runs no operator (bpy.ops)")
    return found


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in imported_roots(tree):
                if name in forbidden:
                    found.append(f"{path.relative_to(root)}:{line}: {package}/ must not import {name}")
    return found + layer_violations(root)


if __name__ == "__main__":
    problems = violations()
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)
