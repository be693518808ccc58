"""Whole materials: map sets gathered exactly, correspondence back to the reference, derived maps, files."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from backend.errors import InputError
from backend.images import unique_path
from backend.materials import derive as D
from backend.materials.correspondence import correspond
from backend.materials.maps import (
    COLOR,
    DATA,
    NORMAL,
    MaterialMap,
    companions,
    fit,
    gather,
    gather_map,
    kind_of,
    map_path,
    read_map,
    save_map,
)
from backend.metrics import seam_score

SIZE = 256


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    """scikit-image's brick at SIZE², as a tinted RGB base colour (uint8)."""
    import skimage.data

    image = Image.fromarray(skimage.data.brick())
    side = min(image.size)
    gray = np.asarray(image.crop((0, 0, side, side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float64)
    return np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)


def luminance8(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.int64) @ [2126, 7152, 722] // 10000).astype(np.uint8)


def normal_of_pixel(rgb: np.ndarray) -> np.ndarray:
    """A normal map made pixel-wise from the base colour (8-bit encoded unit vectors)."""
    c = rgb.astype(np.float64) / 255.0
    n = np.stack([c[..., 0] - 0.5, 0.5 - c[..., 2], np.ones(c.shape[:2])], axis=2)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    return np.rint((n + 1) * 127.5).astype(np.uint8)


def block_permutation(size: int, blocks: int, seed: int) -> np.ndarray:
    """A random toroidal block rearrangement: what the quilter's coordinate map looks like."""
    rng = np.random.default_rng(seed)
    b = size // blocks
    iy, ix = np.indices((b, b))
    coords = np.zeros((size, size, 2), np.int64)
    for i in range(blocks):
        for j in range(blocks):
            oy, ox = rng.integers(0, size, 2)
            coords[i * b:(i + 1) * b, j * b:(j + 1) * b] = np.stack([(oy + iy) % size, (ox + ix) % size], axis=2)
    return coords


def material(base: np.ndarray) -> dict[str, MaterialMap]:
    return {"base_color": MaterialMap("base_color", base, COLOR),
            "roughness": MaterialMap("roughness", (255 - luminance8(base))[..., None]),
            "normal": MaterialMap("normal", normal_of_pixel(base))}


def assert_relations(maps: dict[str, MaterialMap]) -> None:
    colour = maps["base_color"].pixels
    assert np.array_equal(maps["roughness"].pixels[..., 0], 255 - luminance8(colour))
    assert np.array_equal(maps["normal"].pixels, normal_of_pixel(colour))
    lengths = np.linalg.norm(D.decode_normals(maps["normal"].pixels, 255), axis=2)
    assert np.abs(lengths - 1).max() < 0.01


# ------------------------------------------------------------------------------------ gather


def test_every_map_follows_the_base_colour_through_a_coordinate_field_exactly(base):
    maps = material(base)
    coords = block_permutation(SIZE, 8, seed=4)
    moved = {name: gather_map(m, coords) for name, m in maps.items()}
    assert not np.array_equal(moved["base_color"].pixels, base)  # it really was rearranged
    assert_relations(moved)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), h=st.integers(1, 24), w=st.integers(1, 24), channels=st.integers(1, 4))
def test_gather_copies_source_pixels_exactly(seed, h, w, channels):
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 65536, (17, 13, channels)).astype(np.uint16)
    coords = np.stack([rng.integers(0, 17, (h, w)), rng.integers(0, 13, (h, w))], axis=2)
    out = gather(source, coords)
    i, j = rng.integers(0, h), rng.integers(0, w)
    assert out.shape == (h, w, channels) and out.dtype == np.uint16
    assert np.array_equal(out[i, j], source[coords[i, j, 0], coords[i, j, 1]])


def test_gather_refuses_coordinates_outside_the_source():
    with pytest.raises(ValueError, match="outside"):
        gather(np.zeros((4, 4, 1), np.uint8), np.full((2, 2, 2), 4))
    with pytest.raises(ValueError, match="integer"):
        gather(np.zeros((4, 4, 1), np.uint8), np.zeros((2, 2, 2), np.float32))


# ---------------------------------------------------------------------------- correspondence


@pytest.mark.parametrize("shift", [(0, 0), (37, -101), (SIZE // 2, 3)])
def test_correspondence_is_exact_on_a_shifted_copy(base, shift):
    variant = np.roll(base, shift, axis=(0, 1))
    found = correspond(variant, base)
    assert found.rmse == 0.0 and found.mae == 0.0
    assert found.fidelity() == {"correspondence_rmse": 0.0, "correspondence_mae": 0.0}
    expected = (np.stack(np.indices((SIZE, SIZE)), axis=2) - shift) % SIZE
    assert np.array_equal(found.coords, expected)
    moved = {name: gather_map(m, found.coords) for name, m in material(base).items()}
    assert np.array_equal(moved["base_color"].pixels, variant)
    assert_relations(moved)


def test_correspondence_recovers_a_quilted_arrangement(base):
    coords = block_permutation(SIZE, 8, seed=1)
    variant = gather(base, coords)
    found = correspond(variant, base)
    # Only pixels whose patch straddles a block seam have no exact match in the reference.
    assert (found.coords == coords).all(axis=2).mean() > 0.45
    assert found.mae < 0.01 and found.rmse < 0.03
    assert_relations({name: gather_map(m, found.coords) for name, m in material(base).items()})


def test_correspondence_takes_a_deep_feature_hook(base):
    calls = []

    def features(image):
        calls.append(image.shape)
        return image.mean(axis=2, keepdims=True)

    found = correspond(np.roll(base, 5, axis=1), base, features=features)
    assert len(calls) == 2 and found.rmse == 0.0
    with pytest.raises(ValueError, match="features"):
        correspond(base, base, features=lambda image: image[:8])


# ------------------------------------------------------------------------------ derived maps


@pytest.fixture(scope="module")
def tileable(base) -> np.ndarray:
    from backend.api import generate_variants

    (image,) = generate_variants(Image.fromarray(base), engine="patch", seed=3, size=SIZE)
    return np.asarray(image.convert("RGB"))


def test_derived_maps_are_exactly_roll_equivariant(tileable):
    maps = D.derive(tileable)
    shift = (17, -40)
    rolled = D.derive(np.roll(tileable, shift, axis=(0, 1)))
    for name, m in maps.items():
        assert np.array_equal(rolled[name].pixels, np.roll(m.pixels, shift, axis=(0, 1))), name


def test_derived_maps_of_a_tileable_colour_have_no_seam(tileable):
    assert max(seam_score(tileable).values()) < 1.3
    for name, m in D.derive(tileable).items():
        arr = m.pixels.astype(np.float64)
        for axis in (0, 1):
            a = np.moveaxis(arr, axis, 0)
            interior = np.abs(np.diff(a, axis=0)).mean(axis=(1, 2))
            wrap = np.abs(a[0] - a[-1]).mean()
            # the wrap-around step is an ordinary step of the map, not an outlier
            assert wrap <= np.percentile(interior, 97), (name, axis)
        assert 0.5 < np.mean(list(seam_score(arr).values())) < 2.0, name


def test_derived_normals_are_unit_and_agree_with_the_height(tileable):
    h = D.height(tileable)
    n = D.normal_from_height(h)
    assert np.allclose(np.linalg.norm(n, axis=2), 1.0, atol=1e-12)
    # OpenGL: x right, y up; image rows run down, so d(n_y)/d(row) enters with a minus sign.
    div = (np.roll(n[..., 0], -1, 1) - np.roll(n[..., 0], 1, 1)) / 2 \
        - (np.roll(n[..., 1], -1, 0) - np.roll(n[..., 1], 1, 0)) / 2
    lap = np.roll(h, 1, 0) + np.roll(h, -1, 0) + np.roll(h, 1, 1) + np.roll(h, -1, 1) - 4 * h
    assert np.corrcoef(div.ravel(), lap.ravel())[0, 1] < -0.85  # a bump's normals spread out
    strong = np.abs(lap) > np.median(np.abs(lap))
    assert (np.sign(div[strong]) == -np.sign(lap[strong])).mean() > 0.95
    stored = D.derive(tileable, ["normal"])["normal"]
    assert stored.kind == NORMAL and stored.bits == 8
    assert np.abs(np.linalg.norm(D.decode_normals(stored.pixels, 255), axis=2) - 1).max() < 0.01


def test_normal_convention_is_opengl_green_up():
    rows = np.linspace(1.0, 0.0, 64)[:, None] * np.ones((1, 64))  # height rises toward the top
    n = D.normal_from_height(rows)
    assert (n[5:-5, :, 1] < 0).all()  # the slope faces down the image: -Y in OpenGL
    cols = np.linspace(0.0, 1.0, 64)[None, :] * np.ones((64, 1))  # rises to the right
    assert (D.normal_from_height(cols)[:, 5:-5, 0] < 0).all()


def test_derived_roughness_follows_the_documented_mapping():
    flat_bright, flat_dark = np.full((40, 40, 3), 255, np.uint8), np.zeros((40, 40, 3), np.uint8)
    assert np.allclose(D.roughness(flat_bright), 0.35) and np.allclose(D.roughness(flat_dark), 0.55)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert D.roughness(noisy).mean() > 0.7
    with pytest.raises(InputError, match="derivable"):
        D.derive(noisy, ["metallic"])


# ---------------------------------------------------------------------------------- files


def test_maps_are_written_beside_the_variant_with_its_record(tmp_path, base):
    variant = tmp_path / "gravel-patch-s3.png"
    maps = material(base)
    record = json.dumps({"engine": "patch", "seed": 3, "correspondence_rmse": 0.0})
    path = save_map(maps["roughness"], variant, record)
    assert path == tmp_path / "gravel-patch-s3-roughness.png"
    with Image.open(path) as im:
        assert im.text["parameters"] == record
        assert json.loads(im.text["material_map"]) == {"name": "roughness", "kind": DATA,
                                                       "colorspace": "Non-Color", "bits": 8}
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_map(maps["roughness"], variant, "{}")
    assert path.read_bytes() == before
    # the next variant's stem skips any stem whose maps are taken, even if the variant is not
    free = unique_path(tmp_path, "gravel-patch-s3", companions=companions(maps.values()))
    assert free.name == "gravel-patch-s3-2.png"
    assert list(tmp_path.glob(".*.tmp")) == []


def _png16_rgb(path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): signature, IHDR, one IDAT, IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_maps_round_trip_exactly_at_their_bit_depth(tmp_path, channels, dtype):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, (33, 47, channels)).astype(dtype)
    name = "normal" if channels >= 3 else "height"
    path = save_map(MaterialMap(name, pixels), tmp_path / "v.png", "{}")
    back = read_map(path, name)
    assert back.pixels.dtype == dtype and np.array_equal(back.pixels, pixels)
    assert path.suffix == (".tif" if dtype == np.uint16 and channels > 1 else ".png")


def test_16_bit_colour_png_is_read_with_its_low_bits(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 65536, (21, 34, 3)).astype(np.uint16)
    pixels[0, 0] = (40001, 257, 65535)  # 8-bit truncation would read 156, 1, 255
    _png16_rgb(tmp_path / "n.png", pixels)
    back = read_map(tmp_path / "n.png", "normal")
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels, pixels)


def test_a_broken_16_bit_colour_png_is_refused_with_what_to_do(tmp_path):
    _png16_rgb(tmp_path / "n.png", np.full((8, 8, 3), 40000, np.uint16))
    data = (tmp_path / "n.png").read_bytes()
    (tmp_path / "n.png").write_bytes(data[:60] + bytes(20) + data[80:])  # the compressed rows damaged
    with pytest.raises(InputError, match="16-bit PNG") as e:
        read_map(tmp_path / "n.png", "normal")
    assert "save the map again" in e.value.hint


def test_maps_are_never_colour_managed(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(pixels).save(tmp_path / "r.png", icc_profile=profile)
    for name in ("roughness", "base_color"):
        assert np.array_equal(read_map(tmp_path / "r.png", name).pixels, pixels)


def test_kinds_and_colour_spaces_follow_names():
    assert [kind_of(n) for n in ("base_color", "albedo", "normal", "normal_gl", "roughness", "height")] == \
        [COLOR, COLOR, NORMAL, NORMAL, DATA, DATA]
    assert MaterialMap("albedo", np.zeros((2, 2, 3), np.uint8), COLOR).colorspace == "sRGB"
    assert MaterialMap("metallic", np.zeros((2, 2, 1), np.uint8)).colorspace == "Non-Color"
    assert map_path("out/gravel-patch-s3.png", MaterialMap("ao", np.zeros((2, 2, 1), np.uint8))).name \
        == "gravel-patch-s3-ao.png"
    with pytest.raises(InputError, match="file name"):
        MaterialMap("../x", np.zeros((2, 2, 1), np.uint8))
    with pytest.raises(InputError, match="needs RGB"):
        MaterialMap("normal", np.zeros((2, 2, 1), np.uint8))


def test_resampling_crops_like_the_base_colour_and_keeps_normals_unit():
    wide = np.repeat(np.arange(96, dtype=np.uint8)[None, :, None], 48, axis=0)  # value = column
    fitted = fit(MaterialMap("height", wide), 48, 48)
    assert fitted.size == (48, 48)
    assert abs(int(fitted.pixels[0, 0, 0]) - 24) <= 1 and abs(int(fitted.pixels[0, -1, 0]) - 71) <= 1
    big16 = np.full((64, 64, 1), 51234, np.uint16)
    assert np.array_equal(fit(MaterialMap("height", big16), 32, 32).pixels, big16[:32, :32])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(64, 64, 3)) + [0, 0, 3]
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    normal = MaterialMap("normal", np.rint((vectors + 1) * 127.5).astype(np.uint8))
    small = fit(normal, 20, 20)
    assert np.abs(np.linalg.norm(D.decode_normals(small.pixels, 255), axis=2) - 1).max() < 0.01


# ------------------------------------------------------------------------ learned normals


@pytest.fixture(scope="module")
def tiny_marigold(tmp_path_factory):
    from backend.testing.random_addons import write_tiny_marigold_normals

    return write_tiny_marigold_normals(tmp_path_factory.mktemp("models") / "marigold-normals")


def test_marigold_normals_load_from_the_real_layout_and_feed_derive(tiny_marigold, tileable):
    from functools import partial

    from backend.materials.marigold import load_normals, predict_normals

    assert (tiny_marigold / "model_index.json").exists() and (tiny_marigold / "unet" / "config.json").exists()
    pipe = load_normals(tiny_marigold)
    assert load_normals(tiny_marigold) is pipe  # loaded once
    colour = tileable[:64, :64]
    n = predict_normals(colour, pipe, seed=1)
    assert n.shape == (64, 64, 3) and np.allclose(np.linalg.norm(n, axis=2), 1.0)
    assert np.array_equal(n, predict_normals(colour, pipe, seed=1))  # seeded
    stored = D.derive(colour, ["normal"], normals=partial(predict_normals, pipe=pipe, seed=1))["normal"]
    assert np.array_equal(stored.pixels, np.rint((n + 1) * 0.5 * 255).astype(np.uint8))
    assert not np.array_equal(stored.pixels, D.derive(colour, ["normal"])["normal"].pixels)
    assert all(not conv.__dict__.get("_conv_forward") for conv in pipe.unet.modules())  # tiling undone


def test_marigold_missing_model_says_how_to_get_it(tmp_path):
    from backend.errors import ModelsMissingError
    from backend.materials.marigold import resolve_normals

    with pytest.raises(ModelsMissingError, match="model_index"):
        resolve_normals(tmp_path)
    with pytest.raises(ModelsMissingError) as e:
        resolve_normals("nobody-here/no-such-marigold")
    assert "hf download" in e.value.hint
