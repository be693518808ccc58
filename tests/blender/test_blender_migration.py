"""In real Blender: a .blend saved by the add-on before whole materials (one apply record per material)
keeps its way back to the original images after the upgrade (docs/guide/blender.md, "Upgrading"). The old files are
made by that add-on itself (its zip in tests/blender/fixtures/), installed in its own Blender process;
on the 5.0 run, files saved by 4.5 and by 5.0 are both upgraded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.blender.conftest import BLENDERS, run_scenario

pytestmark = pytest.mark.blender
OLD_COMMIT = "59f3068"  # the last add-on with one apply record per material (whole materials came in 5e36b16)
# That add-on as the extension zip an artist had installed, kept here so the test needs no git history:
# `git archive OLD_COMMIT blender_addon blender_manifest.toml`, the files flattened into the zip.
OLD_ZIP = Path(__file__).parent / "fixtures" / f"texture_variants-{OLD_COMMIT}.zip"
OLD_KEYS = ["applied_image", "node_name", "original_had_fake_user", "original_image"]


@pytest.fixture(scope="module")
def migration(tmp_path_factory, blender):
    """({Blender version: what the old add-on saved}, what the current add-on made of those files, in that
    order: file0 = saved by 4.5, the one open when the add-on is enabled)."""
    python, _ = blender
    writers = {"4.5": BLENDERS["4.5"], **({"5.0": python} if python == BLENDERS["5.0"] else {})}
    old, files = {}, []
    for version, writer in writers.items():
        workdir = tmp_path_factory.mktemp(f"old-{version}")
        old[version] = run_scenario("scenario_migration_old", workdir, (writer, OLD_ZIP))
        files.append(workdir / "old.blend")
    return old, run_scenario("scenario_migration", tmp_path_factory.mktemp("upgrade"), blender, *files)


def _files(new) -> list[dict]:
    return [new[key] for key in sorted(new) if key.startswith("file")]


def assert_upgraded(state) -> None:
    """Each node that shows its applied variant has a per-node record; no old key is left anywhere; the
    nodes show what they showed; the originals stay in the file."""
    records = {name.removesuffix(" Material"): m["records"] for name, m in state.items() if name != "fake_user"}
    assert records == {"Applied": [["Texture", "", "Applied original", "Applied variant", False]],
                       "Kept": [["Texture", "", "Kept original", "Kept variant", True]],
                       "Deleted": [], "Replaced": [], "Put Back": [], "Reverted": [], "Untouched": []}
    for name, m in state.items():
        if name != "fake_user":
            assert m["old_keys"] == [] and m["custom_old_keys"] == [], name
    shows = {name: m["shows"] for name, m in state.items() if name != "fake_user"}
    assert shows == {"Applied Material": "Applied variant", "Kept Material": "Kept variant", "Deleted Material": None,
                     "Replaced Material": "Replaced other", "Put Back Material": "Put Back original",
                     "Reverted Material": "Reverted original",
                     "Untouched Material": "Untouched original"}
    # the original put back by hand gets its own fake-user flag back, as Revert would have left it
    assert state["fake_user"] == {"Applied original": True, "Kept original": True, "Deleted original": True,
                                  "Replaced original": True, "Put Back original": False, "Reverted original": False,
                                  "Untouched original": False}


def test_the_old_addon_kept_its_record_as_plain_id_properties_of_the_material_group(migration):
    old, _ = migration
    for version, data in old.items():
        assert data["old_addon"] and data["saved"] and data["blender"].startswith(version)
        group = data["group"]
        assert group["Applied Material"] == {"original_image": ["Image", "Applied original"],
                                             "applied_image": ["Image", "Applied variant"],
                                             "node_name": ["str", "Texture"], "original_had_fake_user": ["int", 0]}
        assert group["Kept Material"]["original_had_fake_user"] == ["int", 1]
        assert group["Reverted Material"] == {"original_image": ["NoneType", None], "applied_image": ["NoneType", None],
                                              "node_name": ["str", ""], "original_had_fake_user": ["int", 0]}
        assert group["Untouched Material"] == {}
        assert data["fake_user"]["Applied original"] and data["fake_user"]["Put Back original"]  # set by Apply
        if version == "4.5":  # what material["texture_variants"] = {...} writes
            assert {name: data["custom"][name] for name in group} == group
        else:  # 5.0 keeps an add-on's properties apart from the material's custom properties
            assert set(data["custom"].values()) == {None}


def test_enabling_the_addon_upgrades_the_file_already_open(migration):
    _, new = migration
    assert new["printed_open"] == []
    assert new["custom_before_enable"]["Applied Material"] == OLD_KEYS  # the 4.5 file, as any Blender reads it
    assert_upgraded(new["enabled"])


def test_opening_an_old_file_upgrades_it_and_a_second_load_does_nothing(migration):
    _, new = migration
    for file in _files(new):
        assert_upgraded(file["loaded"])
        assert file["printed_reload"] == []
        assert file["reloaded"] == file["loaded"]


def test_revert_after_the_upgrade_puts_the_original_images_back(migration):
    _, new = migration
    for file in _files(new):
        assert file["revert"]["Applied"]["error"] is None and file["revert"]["Kept"]["error"] is None
        after = file["reverted"]
        assert after["Applied Material"] == {"records": [], "old_keys": [], "custom_old_keys": [],
                                             "shows": "Applied original"}
        assert after["Kept Material"]["shows"] == "Kept original" and after["Kept Material"]["records"] == []
        # each original's fake user as it was before the variant was applied
        assert after["fake_user"]["Applied original"] is False and after["fake_user"]["Kept original"] is True
        assert file["invariant"] == []


def test_an_inconsistent_old_record_keeps_the_original_in_the_file_and_says_so_once(migration):
    _, new = migration
    for printed in [new["printed_enable"], *(file["printed_load"] for file in _files(new))]:
        assert len(printed) == 1, printed
        [line] = printed
        assert line.count("'Deleted Material'") == 1 and "node 'Texture' is gone" in line
        assert "'Deleted original' is kept in the file" in line
        assert line.count("'Replaced Material'") == 1 and "shows Replaced other" in line
        assert "'Replaced original' is kept in the file" in line
        for quiet in ("Applied", "Kept", "Put Back", "Reverted", "Untouched"):
            assert f"'{quiet} Material'" not in line
    for file in _files(new):
        assert file["reloaded"]["fake_user"]["Deleted original"] and file["reloaded"]["fake_user"]["Replaced original"]
        for name in ("Deleted", "Replaced", "Put Back"):  # nothing recorded: Revert has nothing to put back
            assert "No variant is applied" in file["revert"][name]["error"]


def test_disabling_the_addon_removes_its_load_handler_and_enabling_at_startup_adds_it(migration):
    _, new = migration
    assert new["handlers_left"] == []
    assert new["startup_enable"] and new["startup_handlers"] == [
        "bl_ext.user_default.texture_variants.material.migration"]
