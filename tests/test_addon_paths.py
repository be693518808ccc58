"""Where the add-on writes (blender_addon/paths.py): never over an existing file, never half a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_addon import paths
from blender_addon.errors import UserError


@settings(max_examples=40, deadline=None)
@given(taken=st.sets(st.integers(1, 8), max_size=8), protect=st.sets(st.integers(1, 8), max_size=3))
def test_unique_target_is_free_and_not_protected(tmp_path_factory, taken, protect):
    folder = tmp_path_factory.mktemp("bake")
    name = lambda n: folder / ("wall.png" if n == 1 else f"wall-{n}.png")  # noqa: E731
    for n in taken:
        name(n).write_bytes(b"x")
    target = paths.unique_target(folder, "wall", protected=tuple(str(name(n)) for n in protect))
    assert not target.exists()
    assert target.parent == folder and target.suffix == ".png"
    assert all(os.path.abspath(target) != os.path.abspath(name(n)) for n in protect)


def test_copy_new_file_copies_exactly_and_never_overwrites(tmp_path):
    source = tmp_path / "variant.png"
    source.write_bytes(os.urandom(10000))
    target = paths.copy_new_file(source, tmp_path / "textures" / "wall.png")
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["wall.png"]  # no temporary left behind

    existing = tmp_path / "textures" / "mine.png"
    existing.write_bytes(b"my work")
    with pytest.raises(FileExistsError):
        paths.copy_new_file(source, existing)
    with pytest.raises(FileExistsError):
        paths.copy_new_file(source, source)
    assert existing.read_bytes() == b"my work"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine.png", "wall.png"]


def test_bake_folder_next_to_the_blend_or_chosen(tmp_path):
    assert paths.bake_folder(str(tmp_path / "scene.blend")) == tmp_path / "textures"
    assert paths.bake_folder("", str(tmp_path / "chosen")) == tmp_path / "chosen"
    with pytest.raises(UserError) as e:
        paths.bake_folder("")
    assert e.value.code == "not_saved" and "save the .blend" in str(e.value)


@given(st.text(max_size=40))
def test_safe_stem_is_a_plain_file_name(name):
    stem = paths.safe_stem(name)
    assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
    assert Path(stem).name == stem and len(stem) <= 80


def test_safe_stem_drops_image_extensions_only():
    assert paths.safe_stem("bricks.png") == "bricks"
    assert paths.safe_stem("Bricks.001") == "Bricks.001"
    assert paths.safe_stem("../../etc/passwd") == "etc_passwd"


def test_new_job_folders_are_fresh(tmp_path):
    folders = {paths.new_job_folder(tmp_path / "jobs") for _ in range(5)}
    assert len(folders) == 5 and all(f.is_dir() and not any(f.iterdir()) for f in folders)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_copies_get_the_permissions_of_a_normally_created_file(tmp_path, umask, mode):
    """Variants, maps and baked textures are readable by a render farm or a colleague (0644 under the
    usual umask 022), not the 0600 of a temporary file; the umask is read, not changed."""
    source = tmp_path / "source.png"
    source.write_bytes(b"pixels")
    old = os.umask(umask)
    try:
        copied = paths.copy_new_file(source, tmp_path / "out" / "variant.png")
        assert paths.process_umask() == umask
    finally:
        os.umask(old)
    assert copied.stat().st_mode & 0o777 == mode
