"""In real Blender (docs/guide/production-size.md): a 1024x384 texture is made natively at 1024x384,
a 16384x16384 packed image goes to the backend as its own file, read reduced (timed; the panel says so
before Generate), a generated image over the limit is downsampled on export, and
Upscale x2 of a picked patch variant and of the applied one gives every map at the new size, tiling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.images import load_reference
from backend.metrics import seam_score
from tests.blender.conftest import run_scenario
from tests.blender.test_blender_tileable import wall_files  # noqa: F401  (the fixture)

pytestmark = pytest.mark.blender
HUGE = 16384


@pytest.fixture(scope="module")
def made(tmp_path_factory, blender, color_texture_path, wall_files):  # noqa: F811
    workdir = tmp_path_factory.mktemp("production_size")
    gravel = np.asarray(Image.open(color_texture_path).convert("RGB"))
    wide = workdir / "wide.png"
    Image.fromarray(np.tile(gravel, (3, 8, 1))[:384, :1024]).save(wide)
    # R = x mod 256, G = y mod 256, B a 2x2 checker: each 2x2 block's mean is known exactly
    x, y = np.arange(HUGE, dtype=np.uint16), np.arange(HUGE, dtype=np.uint16)
    huge = np.empty((HUGE, HUGE, 3), np.uint8)
    huge[..., 0] = (x % 256).astype(np.uint8)[None, :]
    huge[..., 1] = (y % 256).astype(np.uint8)[:, None]
    huge[..., 2] = ((x[None, :] + y[:, None]) % 2 * 255).astype(np.uint8)
    huge_path = workdir / "scan16k.png"
    Image.fromarray(huge).save(huge_path, compress_level=1)
    del huge
    data = run_scenario("scenario_production_size", workdir, blender, wide, huge_path, wall_files, timeout=900)
    return data


def test_a_1024_by_384_texture_is_made_natively_at_its_own_size(made):
    assert "Makes 1024×384" in made["wide_labels"]
    assert made["wide_generate"] == {"result": ["FINISHED"], "error": None}
    request = made["wide_request"]
    assert request["params"]["size"] == [1024, 384] and "map_size" not in request["params"]
    assert Image.open(request["input"]).size == (1024, 384)  # the reference as it is: no squeeze
    assert made["wide_results"] == [[1024, 384]]


def test_a_16k_packed_image_goes_as_its_own_file_and_the_backend_reads_it_reduced(made):
    assert made["huge_packed"]
    labels = made["huge_labels"]
    assert "Makes 8192×8192" in labels
    assert any(label.startswith("Downsampled to 8192×8192: the 16384×16384 source") for label in labels)
    export = made["huge_export"]
    with Image.open(export["path"]) as image:  # the packed PNG's bytes, no pixel read in Blender
        assert image.size == (HUGE, HUGE) and image.format == "PNG"
    reference = load_reference(export["path"])
    assert reference.size == (8192, 8192) and reference.read_from == (HUGE, HUGE)
    pixels = np.asarray(reference.rgb)
    half = np.arange(8192)
    # each pixel is its 2x2 block's mean: R = 2x mod 256 + 0.5, G likewise down the rows, B = 127.5
    assert np.abs(pixels[0, :, 0].astype(int) - (2 * half % 256 + 0.5)).max() <= 0.5
    assert np.abs(pixels[:, 0, 1].astype(int) - (2 * half % 256 + 0.5)).max() <= 0.5
    assert set(np.unique(pixels[..., 2])) <= {127, 128}
    print(f"16384² packed export: {export['seconds'][0]:.2f} s, again {export['seconds'][1]:.2f} s")
    assert export["seconds"][1] < 60  # generous: the number itself is reported in the docs, not tested


def test_a_generated_image_over_the_limit_is_downsampled_on_export(made):
    labels = made["generated_labels"]
    assert "Makes 4500×80" in labels
    assert any(label.startswith("Downsampled to 4500×80: the 9000×160 source") for label in labels)
    with Image.open(made["generated_export"]["path"]) as image:
        assert image.size == (4500, 80)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    x, y = np.arange(4500), np.arange(80)
    # 2x2 block means, as for the packed one (rows: Blender's bottom row is the file's last)
    assert np.abs(pixels[0, :, 0] - (2 * x % 256 + 0.5)).max() <= 0.5
    assert np.abs(pixels[::-1, 0, 1] - (2 * y + 0.5)).max() <= 0.5
    assert set(np.unique(pixels[..., 2])) <= {127, 128}


def test_an_hdr_image_over_the_limit_is_reduced_in_linear_values_and_exposure_encoded(made):
    export = made["hdr_export"]
    assert export["encoding"]["kind"] == "linear" and export["encoding"]["scale"] == 4.0  # brightest 4 -> 2^2
    with Image.open(export["path"]) as image:
        assert image.size == (4500, 80)
        encoded = np.asarray(image.convert("RGB")).astype(np.float64) / 255
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4) * 4.0
    x = np.arange(4500)
    means = ((2 * x) % 5 + (2 * x + 1) % 5) / 2  # the block means of R = x mod 5, in linear values
    assert np.abs(linear[0, :, 0] - means).max() < 0.05
    assert np.abs(linear[..., 1] - 0.25).max() < 0.01 and np.abs(linear[..., 2] - 1.5).max() < 0.03


def _tiles(path: str) -> float:
    values = np.asarray(Image.open(path)).astype(np.float64)
    return max(seam_score(values if values.ndim == 3 else values[..., None]).values())


def test_upscale_x2_of_the_picked_variant_gives_every_map_at_twice_the_size_tiling(made):
    assert made["up_generate"]["error"] is None and made["up_picked_call"] == {"result": ["FINISHED"], "error": None}
    width, height = made["up_picked"]["size"]
    request = made["up_request"]
    assert request["request"] == "upscale" and request["params"]["factor"] == 2
    assert set(request["params"]["maps"]) == set(made["up_picked"]["maps"]) >= {"roughness"}
    result = made["up_result"]
    assert result["engine"] == "upscale" and "upscale" in result["label"] and result["source"] == "wall.png"
    assert made["up_history"][0] == result["label"]
    (variant,) = result["variants"]
    assert variant["size"] == [2 * width, 2 * height]
    assert {name: m["size"] for name, m in variant["maps"].items()} == {
        name: [2 * width, 2 * height] for name in made["up_picked"]["maps"]}
    assert _tiles(variant["path"]) < 1.6 and _tiles(variant["maps"]["roughness"]["path"]) < 1.6


def test_upscale_of_the_applied_variant_takes_its_applied_maps(made):
    assert made["up_apply"]["error"] is None and made["up_applied_call"] == {"result": ["FINISHED"], "error": None}
    width, height = made["up_picked"]["size"]
    request = made["up_applied_request"]
    assert request["request"] == "upscale" and "roughness" in request["params"]["maps"]
    (variant,) = made["up_applied_result"]["variants"]
    assert variant["size"] == [4 * width, 4 * height]  # the applied one was the x2 upscale
    assert variant["maps"]["roughness"]["size"] == [4 * width, 4 * height]
    assert made["invariant"] == []
