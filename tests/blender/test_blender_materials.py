"""In real Blender: whole materials (docs/guide/materials.md, "Whole materials", In Blender). A brick base colour with
roughness, a 16-bit normal map and a height map; the patch engine through the real backend."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from backend.materials import derive as D
from backend.materials.maps import read_map
from tests.blender.conftest import run_scenario
from tests.test_materials import _png16_rgb, luminance8

pytestmark = pytest.mark.blender
SIZE = 128
NODES = ("Texture", "Roughness", "Normal", "Height")


def normal16(rgb: np.ndarray) -> np.ndarray:
    """A 16-bit normal map made pixel-wise from the base colour (unit vectors)."""
    c = rgb.astype(np.float64) / 255.0
    n = np.stack([c[..., 0] - 0.5, 0.5 - c[..., 2], np.ones(c.shape[:2])], axis=2)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    return np.rint((n + 1) * 32767.5).astype(np.uint16)


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def brick_files(tmp_path_factory) -> Path:
    """The set as files: every map made pixel-wise from the base colour, so a variant's maps can be
    checked against its own base colour exactly."""
    import skimage.data

    folder = tmp_path_factory.mktemp("brick_material")
    gray = np.asarray(Image.fromarray(skimage.data.brick()).resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float64)
    rgb = np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "brick.png")
    Image.fromarray(255 - luminance8(rgb)).save(folder / "brick_rough.png")
    Image.fromarray(luminance8(rgb)).save(folder / "brick_height.png")
    _png16_rgb(folder / "brick_nrm16.png", normal16(rgb))
    return folder


@pytest.fixture(scope="module")
def material(tmp_path_factory, blender, brick_files):
    workdir = tmp_path_factory.mktemp("materials")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in brick_files.iterdir()}
    data = run_scenario("scenario_materials", workdir, blender, brick_files)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in brick_files.iterdir()} == before
    return data, workdir / "project"


def test_maps_are_found_on_the_principled_inputs_and_shown_with_a_checkbox_each(material):
    data, _ = material
    assert data["found"] == {"roughness": ["Roughness", "direct"], "normal": ["Normal", "normal_map"],
                             "height": ["Height", "bump"]}
    assert data["missing"] == ["metallic"]
    panel = [tuple(call) for call in data["panel"]]
    for name, image in (("Roughness", "brick_rough.png"), ("Normal", "brick_nrm16.png"), ("Height", "brick_height.png")):
        assert ("prop_enum", f"{name}: {image}") in panel
    assert ("label", "Metallic: missing") in panel
    assert ("operator", "texture_variants.add_missing_maps") not in panel  # metallic cannot be derived


def test_every_variant_carries_every_map_rearranged_like_its_base_colour(material):
    data, project = material
    assert data["maps_without"] == [0, 0]  # unticked maps are not sent
    assert data["map_nodes"] == {"height": "Height", "normal": "Normal", "roughness": "Roughness"}
    for variant in data["variants"]:
        maps = variant["maps"]
        assert sorted(maps) == ["height", "normal", "roughness"]
        for m in maps.values():
            assert m["colorspace"] == "Non-Color" and m["size"] == [SIZE, SIZE]
            assert Path(m["file"]).parent == project / "variants"
            assert Path(m["file"]).read_bytes() == Path(m["path"]).read_bytes()
        colour = _rgb(variant["path"])
        assert np.array_equal(read_map(maps["roughness"]["path"], "roughness").pixels[..., 0], 255 - luminance8(colour))
        assert np.array_equal(read_map(maps["height"]["path"], "height").pixels[..., 0], luminance8(colour))
        assert maps["normal"]["deep"] and Path(maps["normal"]["path"]).suffix == ".tif"  # 16 bits kept
        assert np.array_equal(tifffile.imread(maps["normal"]["path"]), normal16(colour))
    assert not np.array_equal(_rgb(data["variants"][0]["path"]), _rgb(data["variants"][1]["path"]))


def _ok(outcome):
    assert outcome["error"] is None and outcome["result"] == ["FINISHED"] and outcome["invariant"] == [], outcome


def test_apply_puts_every_map_in_its_node_and_revert_restores_every_original(material):
    data, _ = material
    _ok(data["apply"])
    variant, applied = data["variants"][1], data["applied"]
    assert applied["Texture"][0] == variant["image"] and applied["Texture"][1] == "sRGB"
    for node, name in (("Roughness", "roughness"), ("Normal", "normal"), ("Height", "height")):
        assert applied[node][:2] == [variant["maps"][name]["image"], "Non-Color"]
    assert all(data["original_fake_users"].values())  # kept in the .blend while unused
    _ok(data["revert"])
    assert data["reverted"] == data["originals"] and data["reverted_same_datablocks"]
    assert not any(data["fake_users_after_revert"].values())  # as they were


def test_bake_writes_every_map_next_to_the_blend_in_its_colour_space_and_depth(material):
    data, project = material
    _ok(data["apply_again"])
    _ok(data["bake"])
    variant, files = data["variants"][0], {name: Path(path) for name, path in data["baked_files"].items()}
    assert {f.parent for f in files.values()} == {project / "textures"}
    assert all(data["baked"][name][2].startswith("//textures/") for name in NODES)
    assert [data["baked"][name][1] for name in NODES] == ["sRGB", "Non-Color", "Non-Color", "Non-Color"]
    assert files["Texture"].read_bytes() == Path(variant["path"]).read_bytes()
    for node, name in (("Roughness", "roughness"), ("Height", "height")):
        assert files[node].read_bytes() == Path(variant["maps"][name]["path"]).read_bytes()
    head = files["Normal"].read_bytes()[:26]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 6)  # a 16-bit RGB(A) PNG
    assert all(diff < 0.5 / 65535 for diff in data["baked_pixels_equal"].values()), data["baked_pixels_equal"]


def test_save_and_reopen_keeps_the_baked_maps(material):
    data, _ = material
    assert data["reopened"] == data["baked"] and data["reopened_invariant"] == []
    assert data["reopened_records"] == sorted(NODES)
    _ok(data["revert_reopened"])


def test_apply_is_refused_and_changes_nothing_when_a_map_node_was_deleted(material):
    data, _ = material
    refused = data["apply_without_height_node"]
    assert refused["result"] is None and refused["unchanged"] and refused["invariant"] == [], refused
    assert "height map" in refused["error"] and "'Height'" in refused["error"] and "To fix:" in refused["error"]


def test_maps_are_found_through_mapping_reroute_hue_mix_math_and_displacement(material):
    data, _ = material
    assert data["through"] == {"base": "Texture", "missing": [], "found": {
        "roughness": ["R", "direct"], "metallic": ["M", "direct"], "normal": ["N", "normal_map"],
        "height": ["H", "displacement"]}}
    # a colour image driving a Bump is the base colour's node: it varies with it, it is not sent twice
    assert data["colour_bump"] == {"found": [], "shared": {"height": "base colour"},
                                   "missing": ["roughness", "metallic", "normal"]}


def test_add_missing_maps_wires_three_derived_maps_and_leaves_the_rest_alone(material, brick_files):
    data, project = material
    outcome = data["add_missing"]
    assert outcome["error"] is None and outcome["result"] == ["FINISHED"] and not outcome["unchanged"]
    assert data["operator_options"] == ["REGISTER", "UNDO"]  # one operator call: one undo step
    tree = data["add_missing_tree"]
    before, after = tree["before"], tree["after"]
    assert set(map(tuple, before["nodes"])) <= set(map(tuple, after["nodes"]))
    assert set(map(tuple, before["links"])) <= set(map(tuple, after["links"]))  # no link changed
    images = tree["new_images"]
    r, n, hgt = (f"{tree['base']} {name}" for name in ("roughness", "normal", "height"))
    assert set(images) == {r, n, hgt}
    assert set(map(tuple, after["links"])) - set(map(tuple, before["links"])) == {
        ("Mapping", "Vector", r, "Vector"), ("Mapping", "Vector", n, "Vector"), ("Mapping", "Vector", hgt, "Vector"),
        (r, "Color", "Principled BSDF", "Roughness"), (n, "Color", "Normal Map", "Color"),
        ("Normal Map", "Normal", "Bump", "Normal"), (hgt, "Color", "Bump", "Height"),
        ("Bump", "Normal", "Principled BSDF", "Normal")}
    colour = _rgb(brick_files / "brick.png")
    expected = D.derive(colour, ["height", "normal", "roughness"])
    for name in ("roughness", "normal", "height"):
        image_name, colorspace, size, path, packed = images[f"{tree['base']} {name}"]
        assert colorspace == "Non-Color" and size == [SIZE, SIZE] and not packed
        assert Path(path).parent == project / "variants"
        assert np.array_equal(read_map(path, name).pixels, expected[name].pixels), name  # the base colour's own maps
    again = data["add_missing_again"]
    assert again["result"] is None and again["unchanged"] and "no missing map" in again["error"]


def test_add_missing_maps_as_displacement(material):
    data, _ = material
    assert data["add_missing_displacement"]["error"] is None
    links = {(a, b, d) for a, b, _, d in map(tuple, data["displacement_links"])}
    assert ("Displacement", "Displacement", "Displacement") in links
    assert ("Normal Map", "Normal", "Normal") in links
    assert not any(a == "Bump" for a, _, _ in links)


def test_the_original_files_are_byte_identical(material):
    data, _ = material
    assert data["originals_unchanged"] and all(data["originals_unchanged"].values())
