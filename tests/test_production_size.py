"""Production size: any W x H in every entry point and engine, tiling exact on both axes, references
of another aspect presented by one rule (framing.cover), large patch outputs quilted at a working
scale and copied up exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend import generate_variants
from backend.cli import build_parser
from backend.errors import InputError
from backend.framing import cover
from backend.images import load_reference
from backend.metrics import seam_score
from backend.params import GenerationParams, capabilities
from backend.patch import engine as patch
from backend.service.protocol import ProtocolError, generate_parameters
from backend.service.request_checks import parse_request


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


# ---------------------------------------------------------------- windowed diffusion and the tiled VAE


def test_window_layouts_cover_every_cell_and_wrap_on_tiled_axes():
    from backend.diffusion.windows import Layout, positions

    assert positions(8, 8, True) == [0] and positions(24, 8, True) == [0, 6, 12, 18]
    assert positions(20, 8, False) == [0, 6, 12]  # within the axis when it does not wrap
    layout = Layout(12, 24, 8, "both")
    counts = torch.zeros(12, 24)
    for ys, xs in layout.tiles():
        assert len(ys) == len(xs) == 8
        counts[ys[:, None], xs[None, :]] += 1
    assert counts.min() >= 1
    assert layout.conv_mode() == "none" and Layout(6, 24, 8, "both").conv_mode() == "y"


def test_one_window_is_the_single_pass_exactly(pipe):
    from backend.diffusion.windows import Layout

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.zeros(1, 77, pipe.unet.config.cross_attention_dim)

    def unet(x, index=None):
        return pipe.unet(x, 10, encoder_hidden_states=text,
                         added_cond_kwargs={"image_embeds": [torch.zeros(1, 1, 32)]}).sample

    with torch.no_grad():
        assert torch.equal(Layout(8, 8, 8).blend(latents, unet), unet(latents))


def _columns(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute step between each column (axis 1) or row (axis 0) and the one before, wrapping."""
    return np.abs(image - np.roll(image, 1, axis=axis)).mean(axis=tuple(a for a in range(image.ndim) if a != axis))


def test_windowed_diffusion_is_periodic_and_leaves_no_step_at_window_borders(tiny_models, reference):
    from backend.diffusion.windows import positions

    noise = torch.randn(1, 4, 12, 24, generator=torch.Generator().manual_seed(1))  # 192 x 96 px, windows of 64
    kw = dict(size=(192, 96), appearance="none", window=64)
    base = _arr(_diffuse(tiny_models, reference, latents=noise, **kw)[0])
    for axis in (2, 3):  # a whole window stride (6 cells = 48 px) along each axis
        rolled = _arr(_diffuse(tiny_models, reference, latents=torch.roll(noise, 6, axis), **kw)[0])
        assert np.abs(np.roll(base, 48, axis - 2) - rolled).max() <= 1 / 255 + 1e-9, axis
    for axis, length in ((1, 24), (0, 12)):
        steps = _columns(base, axis)
        borders = {(8 * (start + edge)) % (8 * length) for start in positions(length, 8, True) for edge in (0, 8)}
        inside = np.delete(steps, sorted(borders))
        assert steps[sorted(borders)].max() <= inside.max(), (axis, steps[sorted(borders)], inside.max())


def test_kv_works_per_window_against_the_references_same_window(tiny_models, reference):
    from backend.diffusion import engine as diffusion

    before = diffusion.counters["reference_branches"]
    (image,) = _diffuse(tiny_models, reference, size=(128, 64), appearance="kv", window=64, seed=4)
    record = json.loads(image.info["parameters"])
    assert image.size == (128, 64) and record["window"] == 64 and record["kv_window_steps"]
    assert diffusion.counters["reference_branches"] == before + 1
    seams = seam_score(image)
    assert seams["x"] <= 2.0 and seams["y"] <= 2.0, seams


def test_controls_that_do_not_work_per_window_are_refused_above_the_window(tiny_models, reference):
    with pytest.raises(InputError, match="appearance ad works up to the window size") as e:
        _diffuse(tiny_models, reference, size=(128, 64), appearance="ad", window=64)
    assert "upscale" in e.value.hint


def test_the_tiled_vae_is_close_to_the_whole_decode_and_exactly_periodic(pipe):
    """Tolerance: on the tiny VAE with windows of 16 cells and 8 cells of context, the mean absolute
    difference to one whole (wrapped) decode is under a quarter of the difference between the decodes
    of two unrelated latents (measured: 0.058 vs 0.35); rolling by a window stride rolls the image."""
    from backend.diffusion.tiling import tiling
    from backend.diffusion.windows import Layout, decode_tiled, encode_tiled

    latents, other = (torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(s)) for s in (2, 3))
    layout = Layout(48, 48, 16, "both")  # windows at 0, 12, 24, 36 on each axis
    with torch.no_grad():
        with tiling("both", pipe.vae.decoder):
            whole, unrelated = pipe.vae.decode(latents).sample, pipe.vae.decode(other).sample
        with tiling(layout.conv_mode(), pipe.vae.decoder, pipe.vae.encoder):
            tiled = decode_tiled(pipe.vae, latents, layout)
            rolled = decode_tiled(pipe.vae, torch.roll(latents, 12, 3), layout)
            encoded = encode_tiled(pipe.vae, tiled, layout)
            encoded_rolled = encode_tiled(pipe.vae, torch.roll(tiled, 96, 2), layout)
    assert (tiled - whole).abs().mean() < 0.25 * (whole - unrelated).abs().mean()
    assert (torch.roll(tiled, 96, 3) - rolled).abs().max() < 1e-4
    assert (torch.roll(encoded, 12, 2) - encoded_rolled).abs().max() < 1e-4


# ---------------------------------------------------------------- upscale


@pytest.fixture(scope="module")
def tileable_set(tmp_path_factory, color_texture_path):
    """A tileable 128 px variant with its derived height and normal maps, on disk."""
    from backend.materials import variants as material

    folder = tmp_path_factory.mktemp("tileable")
    (variant,) = generate_variants(color_texture_path, engine="patch", size=128, seed=1, derive=["height", "normal"])
    path = folder / "tile.png"
    variant.save(path)
    return path, material.save(variant, path)


def _wrap_step_is_typical(pixels: np.ndarray) -> None:
    """The step across the wrap-around border is no larger than the largest interior step, per axis."""
    values = pixels.astype(np.float64)
    for axis in (0, 1):
        steps = _columns(values, axis)
        assert steps[0] <= steps[1:].max(), (axis, steps[0], steps[1:].max())


def test_wrap_resize_is_exactly_periodic():
    from backend.materials.maps import MaterialMap
    from backend.upscaling import wrap_resize

    rng = np.random.default_rng(0)
    m = MaterialMap("height", (rng.random((24, 40, 1)) * 255).astype(np.uint8))
    big = wrap_resize(m, 4, "both").pixels
    rolled = wrap_resize(MaterialMap("height", np.roll(m.pixels, (5, 7), (0, 1))), 4, "both").pixels
    assert big.shape == (96, 160, 1) and np.array_equal(np.roll(big, (20, 28), (0, 1)), rolled)


@pytest.mark.parametrize("factor", [2, 4])
def test_weight_free_upscale_tiles_with_its_maps(tileable_set, factor):
    from backend.materials.derive import decode_normals
    from backend.upscaling import upscale

    path, maps = tileable_set
    out = upscale(path, factor, maps=maps, engine="patch", seed=3)
    side = 128 * factor
    assert out.size == (side, side) and json.loads(out.info["parameters"])["engine"] == "patch"
    seams = seam_score(out)
    assert max(seams.values()) <= 1.3, seams
    for name, m in out.info["maps"].items():
        assert m.size == (side, side), name
        assert max(seam_score(m.pixels[..., :3]).values()) <= 1.3, name
    lengths = np.linalg.norm(decode_normals(out.info["maps"]["normal"].pixels, 255), axis=2)
    assert np.abs(lengths - 1).max() < 0.02


@pytest.mark.parametrize("factor", [2, 4])
def test_diffusion_upscale_refines_through_the_windows_and_tiles(tiny_models, tileable_set, factor):
    from backend.upscaling import upscale

    path, maps = tileable_set
    out = upscale(path, factor, maps=maps, engine="diffusion", seed=3, steps=4, strength=0.5, window=128,
                  base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]))
    side = 128 * factor
    record = json.loads(out.info["parameters"])
    assert out.size == (side, side) and record["engine"] == "diffusion" and record["window"] == 128
    _wrap_step_is_typical(np.asarray(out.convert("L")))
    for name, m in out.info["maps"].items():
        assert m.size == (side, side), name
        _wrap_step_is_typical(m.pixels[..., 0])


def test_cli_upscale_writes_the_image_its_maps_and_a_preview(tileable_set, tmp_path, capsys):
    from backend.cli import main

    path, maps = tileable_set
    assert main(["upscale", str(path), "--factor", "2", "--out", str(tmp_path), "--engine", "patch", "--seed", "1",
                 "--map", f"height={maps['height']}"]) == 0
    written = capsys.readouterr().out.split()
    assert [Path(p).name for p in written] == ["tile-x2.png", "tile-x2-height.png", "tile-x2-tiled3x3.png"]
    assert Image.open(written[0]).size == (256, 256) and Image.open(written[2]).size == (768, 768)
    with pytest.raises(SystemExit):
        main(["upscale", str(path), "--factor", "3", "--out", str(tmp_path)])


def test_the_service_upscales_with_progress_and_maps(tiny_models, tileable_set, tmp_path):
    from tests.service_process import tiny_model_service

    path, maps = tileable_set
    (tmp_path / "service").mkdir()
    service_gen = tiny_model_service(tmp_path / "service", tiny_models)
    service = next(service_gen)
    try:
        hello = service.ask("hello")
        assert "upscale" in hello["requests"] and hello["upscale"]["choices"]["factor"] == [2, 4]
        bad = service.ask("upscale", input=str(path), output_dir=str(tmp_path), factor=3)
        assert bad["type"] == "error" and "factor" in bad["message"]
        job = service.send("upscale", input=str(path), output_dir=str(tmp_path / "big"), factor=2, engine="patch",
                           seed=1, maps={"height": maps["height"]}, tiled_preview=True)
        events = service.job_events(job)
    finally:
        next(service_gen, None)  # stops it: exit 0, protocol lines only
    final = events[-1]
    assert final["type"] == "result", final
    (entry,) = final["files"]
    assert Path(entry["path"]).name.startswith("tile-x2-patch") and Image.open(entry["path"]).size == (256, 256)
    assert Image.open(entry["maps"]["height"]).size == (256, 256) and Path(entry["tiled"]).exists()
