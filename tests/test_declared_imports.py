"""What backend/ imports is what pyproject.toml declares, and constraints.txt pins what it declares;
the test fixtures (backend/testing) stay out of the runtime."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The make-test-models command is the one runtime entry that writes fixtures.
FIXTURE_USERS = {"backend/cli/models.py"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # from backend import testing
                yield node.lineno, f"{node.module}.{alias.name}"


def backend_imports(root: Path = ROOT) -> dict[str, list[str]]:
    """Top-level third-party import names under backend/ -> where they are imported."""
    found: dict[str, list[str]] = {}
    for path in sorted((root / "backend").rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top != "backend" and top not in sys.stdlib_module_names:
                found.setdefault(top, []).append(f"{path.relative_to(root)}:{line}")
    return found


def declared(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(runtime dependencies, optional ones) of pyproject.toml, canonical distribution names."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    optional = {canonicalize_name(Requirement(r).name) for reqs in project["optional-dependencies"].values()
                for r in reqs}
    return runtime, optional


def undeclared(imports: dict[str, list[str]], allowed: set[str]) -> list[str]:
    """Import names whose distribution is not in `allowed` (or that no installed distribution provides)."""
    providers = importlib.metadata.packages_distributions()
    missing = []
    for name, where in sorted(imports.items()):
        dists = {canonicalize_name(d) for d in providers.get(name, [])}
        if not dists & allowed:
            missing.append(f"{name} ({', '.join(sorted(dists)) or 'no installed distribution'}) at {where[0]}")
    return missing


def test_every_third_party_import_of_the_backend_is_declared_in_pyproject():
    runtime, optional = declared()
    imports = backend_imports()
    assert {"torch", "diffusers", "PIL", "tifffile"} <= set(imports)  # the walk sees the backend's imports
    assert undeclared(imports, runtime | optional) == []


def test_the_check_catches_an_undeclared_import(tmp_path):
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "x.py").write_text("import json\nimport numpy\n\ndef f():\n    import tifffile\n")
    imports = backend_imports(tmp_path)
    assert set(imports) == {"numpy", "tifffile"}  # stdlib left out, imports inside functions counted
    assert undeclared(imports, {"numpy"}) == ["tifffile (tifffile) at backend/x.py:5"]


def test_constraints_pin_every_declared_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for reqs in project["optional-dependencies"].values() for r in reqs]
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt pins no version of {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req}"


def test_the_runtime_never_imports_the_test_fixtures():
    users = []
    for path in sorted((ROOT / "backend").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel.startswith("backend/testing/") or rel in FIXTURE_USERS:
            continue
        users += [f"{rel}:{line}" for line, name in _imports(path) if name.split(".")[:2] == ["backend", "testing"]]
    assert users == []
