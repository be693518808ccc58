"""In real Blender: float maps keep their values (docs/guide/materials.md, "Whole materials"). A float OpenEXR height
with values in [-0.3, 2.5] goes through Generate (patch engine), Apply and Bake exactly; a non-square
texture's maps come back at its size from the backend, normals unit length."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.blender.conftest import run_scenario
from tests.test_float_maps import HIGH, LOW, height_of
from tests.test_materials import normal_of_pixel

pytestmark = pytest.mark.blender
SIZE = 128
FLOAT = 2  # an OpenEXR channel's pixel type: 0 uint, 1 half, 2 float


def _grey_brick(width: int, height: int) -> np.ndarray:
    """scikit-image's brick, contrast-stretched so 0 and 255 each cover a tenth of it (every variant
    reaches both ends of the height's range)."""
    import skimage.data

    gray = np.asarray(Image.fromarray(skimage.data.brick()).resize((width, height), Image.Resampling.LANCZOS),
                      np.float64)
    gray = np.clip((gray - np.percentile(gray, 10)) / (np.percentile(gray, 90) - np.percentile(gray, 10)), 0, 1)
    return np.repeat(np.rint(gray * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def float_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("float_material")
    square, wide = _grey_brick(SIZE, SIZE), _grey_brick(SIZE, SIZE // 2)
    Image.fromarray(square).save(folder / "brick.png")
    tifffile.imwrite(folder / "height.tif", height_of(square))
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(normal_of_pixel(wide)).save(folder / "wide_normal.png")
    tifffile.imwrite(folder / "wide_height.tif", height_of(wide))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, blender, float_files):
    workdir = tmp_path_factory.mktemp("float_maps")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in float_files.iterdir()}
    data = run_scenario("scenario_float_maps", workdir, blender, float_files)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in float_files.iterdir()} == before
    return data, workdir / "project"


def pixels(record) -> np.ndarray:
    """A dumped channel as rows top to bottom, like the files."""
    width, height = record["size"]
    return np.fromfile(record["pixels"], np.float32).reshape(height, width)[::-1]


def exr_channels(path: Path) -> list[tuple[str, int]]:
    """(name, pixel type) of each channel in an OpenEXR file's header."""
    data = path.read_bytes()
    assert data[:4] == b"\x76\x2f\x31\x01", "not an OpenEXR file"
    pos = 8
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        type_end = data.index(b"\0", name_end + 1)
        size = int.from_bytes(data[type_end + 1:type_end + 5], "little")
        value = data[type_end + 5:type_end + 5 + size]
        if data[pos:name_end] == b"channels":
            channels, i = [], 0
            while value[i] != 0:
                end = value.index(b"\0", i)
                channels.append((value[i:end].decode(), int.from_bytes(value[end + 1:end + 5], "little")))
                i = end + 17  # name, pixel type, pLinear + reserved, x and y sampling
            return channels
        pos = type_end + 5 + size
    raise AssertionError("no channels attribute")


def _ok(outcome):
    assert outcome["error"] is None and outcome["result"] == ["FINISHED"], outcome


def test_the_source_is_a_float_openexr_with_values_outside_0_1(run, float_files):
    data, _ = run
    source = data["source"]
    assert source["format"] == "OPEN_EXR" and source["float"] and source["colorspace"] != "Non-Color"
    values = pixels(source)
    assert np.array_equal(values, tifffile.imread(float_files / "height.tif"))
    assert values.min() == np.float32(LOW) and values.max() == np.float32(HIGH)


def test_a_float_heights_variants_come_back_float_with_the_sources_values(run):
    data, project = run
    _ok(data["generate"])
    source = pixels(data["source"])
    for variant in data["variants"]:
        height = variant["maps"]["height"]
        assert height["float"] and height["colorspace"] == "Non-Color" and height["size"] == [SIZE, SIZE]
        assert Path(height["path"]).suffix == ".tif" and Path(height["file"]).parent == project / "variants"
        values = pixels(height)
        assert np.array_equal(values, tifffile.imread(height["path"]))  # Blender reads the float TIFF exactly
        colour = np.asarray(Image.open(variant["path"]).convert("RGB"))
        assert np.array_equal(values, height_of(colour))  # follows its base colour pixel for pixel
        assert np.isin(values, source).all()
        assert (values.min(), values.max()) == (source.min(), source.max())  # no quantisation: error 0


def test_apply_shows_the_float_height_and_bake_writes_a_float_openexr(run, float_files):
    data, project = run
    _ok(data["apply"])
    applied, variant = data["applied"], data["variants"][1]["maps"]["height"]
    assert applied["name"] == variant["name"] and applied["float"] and applied["colorspace"] == "Non-Color"
    assert np.array_equal(pixels(applied), pixels(variant))
    _ok(data["bake"])
    baked = data["baked"]
    path = Path(baked["file"])
    assert path.parent == project / "textures" and path.suffix == ".exr"
    channels = exr_channels(path)
    # 32-bit float, no alpha, the source's channels (Blender writes a grey OpenEXR as R = G = B)
    assert {kind for _, kind in channels} == {FLOAT} and "A" not in dict(channels)
    assert channels == exr_channels(Path(data["source"]["file"]))
    assert baked["float"] and baked["colorspace"] == "Non-Color"
    assert np.abs(pixels(baked) - pixels(applied)).max() == 0.0
    assert data["originals_unchanged"] and all(data["originals_unchanged"].values())


def test_a_non_square_textures_maps_come_back_at_its_size_from_the_backend(run):
    data, _ = run
    _ok(data["wide_generate"])
    wide = data["wide_variant"]
    assert wide["size"] == [SIZE, SIZE // 2]
    for name in ("normal", "height"):
        m = wide["maps"][name]
        assert m["size"] == [SIZE, SIZE // 2] and m["colorspace"] == "Non-Color"
        with Image.open(m["path"]) as backend_file:  # written at that size by the backend, not resized here
            assert backend_file.size == (SIZE, SIZE // 2)
    low, high = data["wide_normal_length"]
    assert 0.99 < low and high < 1.01, (low, high)  # unit length up to 8-bit quantisation
    height = pixels(wide["maps"]["height"])
    source = np.fromfile(data["wide_source_height"], np.float32)
    assert wide["maps"]["height"]["float"] and source.min() <= height.min() and height.max() <= source.max()
    assert height.min() < 0 and height.max() > 1
