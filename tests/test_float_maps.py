"""Float maps keep their values (docs/guide/materials.md, "Whole materials"): float TIFFs read, gathered and written
exactly, resampled within their range; `map_size` writes a squeezed reference's maps back at the
texture's size with unit normals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from backend.api import generate_variants
from backend.errors import InputError
from backend.materials import derive as D
from backend.materials import variants as material
from backend.materials.maps import MaterialMap, fit, read_map, resize, save_map
from backend.params import GenerationParams
from backend.service.protocol import ProtocolError
from backend.service.request_checks import parse_request
from tests.test_material_variants import decode_shifted_copies
from tests.test_materials import luminance8, normal_of_pixel

SIZE = 128
LOW, HIGH = -0.3, 2.5


def height_of(rgb: np.ndarray) -> np.ndarray:
    """A float height made pixel-wise from the base colour, in [LOW, HIGH] (float32)."""
    return (LOW + (HIGH - LOW) * luminance8(rgb).astype(np.float32) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def float_set(tmp_path_factory) -> dict[str, Path]:
    """A brick base colour whose luminance spans 0..255 (so every variant reaches both ends) and a
    float32 TIFF height = LOW + (HIGH - LOW) * luminance / 255."""
    import skimage.data

    folder = tmp_path_factory.mktemp("float_set")
    gray = np.asarray(Image.fromarray(skimage.data.brick()).resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float64)
    gray = np.clip((gray - np.percentile(gray, 10)) / (np.percentile(gray, 90) - np.percentile(gray, 10)), 0, 1)
    rgb = np.repeat(np.rint(gray * 255).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(folder / "brick.png")
    tifffile.imwrite(folder / "height.tif", height_of(rgb), compression="zlib")
    return {"base": folder / "brick.png", "height": folder / "height.tif"}


def test_a_float_height_goes_through_the_patch_engine_exactly(float_set, tmp_path):
    source = tifffile.imread(float_set["height"])
    assert source.dtype == np.float32 and source.min() == np.float32(LOW) and source.max() == np.float32(HIGH)
    images = generate_variants(float_set["base"], engine="patch", size=SIZE, variants=2, seed=7,
                               maps={"height": str(float_set["height"])})
    for i, image in enumerate(images):
        path = tmp_path / f"v{i}.png"
        image.save(path)
        written = material.save(image, path)
        assert written == {"height": str(tmp_path / f"v{i}-height.tif")}
        height = tifffile.imread(written["height"])
        assert height.dtype == np.float32 and height.shape == (SIZE, SIZE)
        assert np.isin(height, source).all()  # every value one of the input's: gathered, not filtered
        assert np.array_equal(height, height_of(np.asarray(Image.open(path).convert("RGB"))))
        assert (height.min(), height.max()) == (source.min(), source.max())
        about = json.loads(tifffile.TiffFile(written["height"]).pages[0].description)
        assert about["material_map"]["bits"] == 32 and about["parameters"] == image.info["parameters"]
        assert read_map(written["height"], "height").pixels.dtype == np.float32
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_maps_are_read_as_float32_and_round_trip_exactly(tmp_path, channels, dtype):
    rng = np.random.default_rng(channels)
    values = rng.uniform(-5, 40, (21, 30, channels)).astype(dtype)
    tifffile.imwrite(tmp_path / "in.tif", values if channels > 1 else values[..., 0],
                     photometric="rgb" if channels >= 3 else "minisblack",
                     extrasamples=("unassalpha",) if channels in (2, 4) else None)
    name = "normal" if channels >= 3 else "height"
    m = read_map(tmp_path / "in.tif", name)
    assert m.is_float and m.bits == 32 and np.array_equal(m.pixels, values.astype(np.float32))
    path = save_map(m, tmp_path / "v.png", "{}")
    assert path.name == f"v-{name}.tif"
    assert np.array_equal(read_map(path, name).pixels, m.pixels)


def test_a_float_map_follows_the_diffusion_engines_correspondence_exactly(tiny_models, color_texture_path,
                                                                         tmp_path, monkeypatch):
    from backend.framing import center_square

    shift = (5, -13)
    scaled = center_square(Image.open(color_texture_path).convert("RGB"), 64)
    decode_shifted_copies(monkeypatch, scaled, shift)
    values = np.random.default_rng(1).uniform(LOW, HIGH, (128, 128)).astype(np.float32)
    tifffile.imwrite(tmp_path / "h.tif", values)
    image, = generate_variants(color_texture_path, engine="diffusion", base=str(tiny_models["base"]),
                               ip_adapter=str(tiny_models["ip_adapter"]), size=64, steps=2, seed=3,
                               maps={"height": str(tmp_path / "h.tif")})
    height = image.info["maps"]["height"].pixels
    fitted = fit(read_map(tmp_path / "h.tif", "height"), 64, 64).pixels  # the engine's scale, within range
    assert height.dtype == np.float32 and np.array_equal(height, np.roll(fitted, shift, axis=(0, 1)))
    assert LOW <= fitted.min() and fitted.max() <= HIGH


def test_non_finite_floats_are_refused_clearly(tmp_path):
    values = np.zeros((8, 8), np.float32)
    values[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "h.tif", values)
    with pytest.raises(InputError, match="NaN or infinite") as e:
        read_map(tmp_path / "h.tif", "height")
    assert "clamp" in e.value.hint


def test_resampling_a_float_map_keeps_it_float_and_within_each_channels_range():
    rng = np.random.default_rng(3)
    steps = np.where(rng.random((40, 60, 2)) < 0.5, LOW, HIGH).astype(np.float32)  # rings under Lanczos
    steps[..., 1] *= 10
    for out in (fit(MaterialMap("height", steps), 25, 25), resize(MaterialMap("height", steps), 90, 17)):
        assert out.pixels.dtype == np.float32
        for c in range(2):
            assert steps[..., c].min() <= out.pixels[..., c].min() and out.pixels[..., c].max() <= steps[..., c].max()
        assert (out.pixels < 0).any() and (out.pixels > 1).any()  # not clipped to 0..1
    vectors = rng.normal(size=(40, 60, 3)) + [0, 0, 2]
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    normal = resize(MaterialMap("normal", ((vectors + 1) / 2).astype(np.float32)), 97, 31)
    assert np.abs(np.linalg.norm(normal.pixels * 2 - 1, axis=2) - 1).max() < 1e-5


def test_resize_stretches_the_whole_map_where_fit_crops_its_centre():
    wide = np.repeat(np.arange(96, dtype=np.uint8)[None, :, None], 48, axis=0)  # value = column
    stretched, cropped = resize(MaterialMap("height", wide), 48, 48), fit(MaterialMap("height", wide), 48, 48)
    assert stretched.pixels[0, 0, 0] <= 1 and stretched.pixels[0, -1, 0] >= 94
    assert abs(int(cropped.pixels[0, 0, 0]) - 24) <= 1


# ------------------------------------------------------------------------------------ map_size


@pytest.fixture(scope="module")
def squeezed_set(tmp_path_factory) -> dict[str, Path]:
    """A 2:1 brick base colour squeezed to a square (as clients older than W×H sizes send it) and its
    normal map at the texture's own 2:1 size."""
    import skimage.data

    folder = tmp_path_factory.mktemp("squeezed_set")
    gray = np.asarray(Image.fromarray(skimage.data.brick()).resize((2 * SIZE, SIZE), Image.Resampling.LANCZOS),
                      np.float64)
    rgb = np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(folder / "squeezed.png")
    Image.fromarray(normal_of_pixel(rgb)).save(folder / "normal.png")
    return {"base": folder / "squeezed.png", "normal": folder / "normal.png"}


def _lengths(normal: np.ndarray) -> np.ndarray:
    return np.linalg.norm(D.decode_normals(normal, 255), axis=2)


def test_map_size_writes_a_squeezed_references_maps_at_the_textures_size_with_unit_normals(squeezed_set):
    images = generate_variants(squeezed_set["base"], engine="patch", size=SIZE, variants=2, seed=1,
                               maps={"normal": str(squeezed_set["normal"])}, derive=["height"],
                               map_size=(2 * SIZE, SIZE))
    for image in images:
        assert image.size == (SIZE, SIZE)  # the variant itself stays the engine's square
        maps = image.info["maps"]
        assert maps["normal"].size == maps["height"].size == (2 * SIZE, SIZE)
        assert np.abs(_lengths(maps["normal"].pixels) - 1).max() < 0.01  # 8-bit quantisation
    plain, = generate_variants(squeezed_set["base"], engine="patch", size=SIZE, seed=1,
                               maps={"normal": str(squeezed_set["normal"])})
    square = plain.info["maps"]["normal"].pixels
    assert square.shape[:2] == (SIZE, SIZE)  # without map_size: the centre crop, at the variant's size
    # stretched outside the backend (a bilinear resize, as Blender's Image.scale does), it is not unit
    outside = np.asarray(Image.fromarray(square).resize((2 * SIZE, SIZE), Image.Resampling.BILINEAR))
    assert np.abs(_lengths(outside) - 1).max() > 0.02


def test_map_size_stretches_given_maps_to_the_reference_instead_of_cropping(squeezed_set):
    params = GenerationParams.build(engine="patch", maps={"normal": str(squeezed_set["normal"])},
                                    map_size=(2 * SIZE, SIZE))
    loaded = material.load(params, (SIZE, SIZE))["normal"]
    whole = np.asarray(Image.fromarray(normal_of_pixel(np.asarray(Image.open(squeezed_set["base"])))))
    cropped = material.load(params.replace(map_size=None), (SIZE, SIZE))["normal"]
    # the stretched map lines up with the squeezed colour; the centre crop does not
    assert np.abs(loaded.pixels.astype(int) - whole).mean() < np.abs(cropped.pixels.astype(int) - whole).mean() / 3


@pytest.mark.parametrize("value, message", [
    ([0, 10], "map_size"), ([10], "map_size"), ([10.5, 3], "map_size"), ("1024x512", "map_size"),
    ([9000, 10], "8192")])
def test_map_size_refuses_bad_values(value, message):
    with pytest.raises(InputError, match=message):
        GenerationParams.build(derive=["height"], map_size=value)


def test_map_size_needs_maps_and_travels_in_requests():
    with pytest.raises(InputError, match="map_size applies to maps"):
        GenerationParams.build(map_size=[64, 32])

    def request(**fields) -> bytes:
        return json.dumps({"id": "g", "type": "generate", "input": "/abs/in.png", "output_dir": "/abs/out",
                           **fields}).encode()

    assert parse_request(request(derive=["height"], map_size=[64, 32])).fields["params"].map_size == (64, 32)
    with pytest.raises(ProtocolError, match="map_size") as e:
        parse_request(request(map_size=[64, 32]))
    assert e.value.code == "bad_request"


def test_cli_maps_come_back_at_the_size_asked_for(float_set, tmp_path, capsys):
    from backend.cli import main

    assert main(["generate", str(float_set["base"]), "--out", str(tmp_path), "--engine", "patch", "--size", "128x64",
                 "--derive", "height", "--no-preview"]) == 0
    height, = tmp_path.glob("*-height.png")
    assert Image.open(height).size == (128, 64)
    with pytest.raises(SystemExit):  # --map-size is gone from the CLI: --size WxH makes the maps that size
        main(["generate", str(float_set["base"]), "--out", str(tmp_path / "bad"), "--derive", "height",
              "--map-size", "128x64"])
