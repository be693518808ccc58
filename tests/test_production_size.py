"""Production size: any W x H in every entry point and engine, tiling exact on both axes, references
of another aspect presented by one rule (images.cover), large patch outputs quilted at a working
scale and copied up exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend import generate_variants
from backend.cli import build_parser
from backend.errors import InputError
from backend.images import cover, load_reference
from backend.metrics import seam_score
from backend.params import GenerationParams, capabilities
from backend.patch import engine as patch
from backend.service.protocol import ProtocolError, generate_parameters, parse_request


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


# ---------------------------------------------------------------- the parameter


@pytest.mark.parametrize("value, expected", [(512, (512, 512)), ([1024, 384], (1024, 384)), ((64, 8192), (64, 8192))])
def test_size_is_an_integer_or_a_width_height_pair(value, expected):
    assert GenerationParams.build(size=value).size == expected
    params = GenerationParams.build(size=value)
    assert (params.width, params.height) == expected


@pytest.mark.parametrize("value", [63, 8193, [64], [64, 64, 64], [True, 64], "512", [64.5, 64], [100, 0]])
def test_bad_sizes_are_refused_naming_size(value):
    with pytest.raises(InputError, match="size"):
        GenerationParams.build(size=value)


def test_the_patch_engine_takes_any_side_and_diffusion_multiples_of_8():
    assert GenerationParams.build(engine="patch", size=[100, 70]).size == (100, 70)
    with pytest.raises(InputError, match="multiples of 8") as e:
        GenerationParams.build(engine="diffusion", size=[100, 70])
    assert "96x64" in e.value.hint


def test_cli_size_takes_wxh_or_n():
    parse = build_parser().parse_args
    assert parse(["generate", "in.png", "--out", "o", "--size", "1024x384"]).size == (1024, 384)
    assert parse(["generate", "in.png", "--out", "o", "--size", "512"]).size == 512
    with pytest.raises(SystemExit):
        parse(["generate", "in.png", "--out", "o", "--size", "big"])


def test_protocol_size_is_an_integer_or_a_pair_and_hello_lists_the_range():
    def request(size) -> bytes:
        return json.dumps({"id": "g", "type": "generate", "input": "/abs/in.png", "output_dir": "/abs/out",
                           "engine": "patch", "size": size}).encode()

    assert parse_request(request([1024.0, 384])).fields["params"].size == (1024, 384)
    assert parse_request(request(256)).fields["params"].size == (256, 256)
    with pytest.raises(ProtocolError, match="size"):
        parse_request(request([1024, "384"]))
    declared = generate_parameters()["size"]
    assert declared == capabilities()["size"] == {"min": 64, "max": 8192, "multiple": {"diffusion": 8, "patch": 1}}


# ---------------------------------------------------------------- how a reference is presented


def test_a_reference_of_the_outputs_aspect_is_only_scaled_and_another_is_centre_cropped():
    rng = np.random.default_rng(0)
    wide = Image.fromarray((rng.random((96, 256, 3)) * 255).astype(np.uint8))
    assert np.array_equal(np.asarray(cover(wide, (256, 96))), np.asarray(wide))  # its own size: untouched
    half = cover(wide, (128, 48))
    assert np.abs(_arr(half) - _arr(wide.resize((128, 48), Image.Resampling.LANCZOS))).max() == 0
    square = cover(wide, 96)  # a square output sees the centre square, no squeeze
    assert np.array_equal(np.asarray(square), np.asarray(wide)[:, 80:176])


# ---------------------------------------------------------------- the patch engine


@pytest.mark.parametrize("size", [(160, 64), (64, 144), (130, 70)])
def test_patch_outputs_of_any_aspect_copy_pixels_exactly_and_tile_on_both_axes(size, color_texture_path):
    reference = load_reference(color_texture_path)
    (variant,) = patch.synthesize(reference, GenerationParams.build(engine="patch", size=size, seed=5))
    assert variant.image.size == size
    image = np.asarray(variant.image)
    assert np.array_equal(image, variant.exemplar[variant.coords[..., 0], variant.coords[..., 1]])
    seams = seam_score(variant.image)
    assert seams["x"] <= 1.5 and seams["y"] <= 1.5, seams


def test_a_source_of_the_outputs_size_is_quilted_at_its_own_scale(color_texture_path):
    wide = Image.open(color_texture_path).convert("RGB").resize((192, 72), Image.Resampling.LANCZOS)
    (image,) = generate_variants(wide, engine="patch", size=(192, 72), seed=2)
    record = json.loads(image.info["parameters"])
    assert image.size == (192, 72) and record["patch_exemplar_size"] == [192, 72] and record["size"] == [192, 72]


def test_above_the_working_side_blocks_are_cut_at_a_working_scale_and_copied_up_exactly(monkeypatch,
                                                                                      color_texture_path):
    monkeypatch.setattr(patch, "WORK_SIDE", 64)
    reference = load_reference(color_texture_path)
    params = GenerationParams.build(engine="patch", size=(250, 130), seed=1)
    (variant,) = patch.synthesize(reference, params)
    assert variant.record["patch_work_scale"] == 4 and variant.image.size == (250, 130)
    assert np.array_equal(np.asarray(variant.image), variant.exemplar[variant.coords[..., 0], variant.coords[..., 1]])
    # every working cell is a block of whole exemplar pixels: within a cell, the source steps by one pixel
    dy = np.diff(variant.coords[..., 0].astype(int), axis=0)
    assert (dy == 1).mean() > 0.7
    seams = seam_score(variant.image)
    assert seams["x"] <= 1.5 and seams["y"] <= 1.5, seams


def test_upsampled_cells_cover_every_pixel_with_offsets_below_the_factor():
    for side, cells in ((250, 63), (256, 64), (130, 33), (7, 7)):
        cell, offset = patch._cells(side, cells)
        assert cell.min() == 0 and cell.max() == cells - 1 and np.all(np.diff(cell) >= 0)
        f = -(-side // cells)
        assert offset.min() == 0 and offset.max() < f and np.all(offset[1:][np.diff(cell) == 1] == 0)


# ---------------------------------------------------------------- the diffusion engine (tiny models)


def _diffuse(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=2)
    return generate_variants(reference, **(args | kw))


@pytest.mark.parametrize("appearance", ["none", "kv"])
def test_diffusion_rolls_per_axis_for_non_square_outputs(tiny_models, reference, appearance):
    noise = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(3))  # 192 x 64 px
    kw = dict(size=(192, 64), appearance=appearance)
    base = _arr(_diffuse(tiny_models, reference, latents=noise, **kw)[0])
    assert base.shape[:2] == (64, 192)
    for axis in (2, 3):
        rolled = _arr(_diffuse(tiny_models, reference, latents=torch.roll(noise, 8, axis), **kw)[0])
        assert np.abs(np.roll(base, 64, axis - 2) - rolled).max() <= 1 / 255 + 1e-9, axis


def test_diffusion_refuses_sides_off_the_latent_grid_even_through_auto(tiny_models, reference):
    with pytest.raises(InputError, match="multiples of 8"):
        _diffuse(tiny_models, reference, engine="auto", size=(100, 64))
