"""Import boundaries: blender_addon/ runs inside Blender's Python, backend/ runs outside Blender.

Walks the AST of every module (so an import hidden in a function counts too) and fails with the
offending file and line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "blender_addon": {"torch", "diffusers", "transformers", "numpy", "safetensors", "huggingface_hub", "backend"},
    "backend": {"bpy", "bmesh", "mathutils", "blender_addon", "scripts"},
}


def imported_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in imported_roots(tree):
                if name in forbidden:
                    found.append(f"{path.relative_to(root)}:{line}: {package}/ must not import {name}")
    return found


if __name__ == "__main__":
    problems = violations()
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)
