"""Make it tile (backend/tileable.py): real CC0 photos cut off their period, with a lighting gradient
added, made tileable at their own size; everything outside the band is the input's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from backend import make_tileable, tileable
from backend.errors import InputError
from backend.materials.maps import MaterialMap
from backend.metrics import seam_score
from backend.patch import lattice
from tests.conftest import ROOT

CROPS = {"square": (13, 7, 256, 256), "wide": (21, 5, 240, 420), "tall": (3, 40, 400, 224)}


def _photo(name: str, crop: str, gradient: bool = True) -> Image.Image:
    """A crop of a scikit-image texture off its period, lit from one side when `gradient`."""
    y, x, h, w = CROPS[crop]
    arr = getattr(skimage.data, name)()[y:y + h, x:x + w].astype(np.float64)
    if gradient:
        light = np.linspace(0.7, 1.2, w)[None, :] * np.linspace(0.92, 1.08, h)[:, None]
        arr = arr * (light if arr.ndim == 2 else light[..., None])
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _outside_band(result) -> np.ndarray:
    return np.asarray(result.info["band"]) == 0


@pytest.mark.parametrize("crop", sorted(CROPS))
@pytest.mark.parametrize("name", ["brick", "gravel", "grass"])
def test_a_lit_photo_comes_out_tiling_level_and_otherwise_unchanged(name, crop):
    photo = _photo(name, crop)
    result = make_tileable(photo)
    assert result.size == photo.size and result.mode == photo.mode
    record = json.loads(result.info["parameters"])
    out = np.asarray(result, dtype=np.float64)
    seams = seam_score(out)
    if name == "brick":  # a mortar edge may lie on the border: the wrap step is then one of the wall's own
        for axis in (0, 1):  # large steps, so it is compared with the steps' distribution, not their median
            lines = np.moveaxis(out, axis, 0)
            steps = np.abs(np.diff(lines, axis=0)).mean(axis=1)
            assert np.abs(lines[0] - lines[-1]).mean() <= np.quantile(steps, 0.9), (axis, seams)
    else:
        assert max(seams.values()) <= 1.1, seams
    assert min(record["seam_before"].values()) > 1.5  # the photo did not tile
    gray_in = np.asarray(photo, dtype=np.float64) / 255
    before, after = tileable.border_difference(gray_in), tileable.border_difference(out / 255)
    for axis in ("x", "y"):
        assert after[axis] <= 0.2 * before[axis] + 0.01, (axis, before, after)
    # outside the band: the levelled input, exactly
    arr = gray_in[..., None]
    low = tileable.illumination(arr[..., 0], tileable.feature_length(arr[..., 0]))
    levelled = tileable.flatten_colour(arr, low / low.mean())[..., 0]
    expected = np.clip(np.round(levelled * 255), 0, 255)
    keep = _outside_band(result)
    assert record["flatten"] and 0.4 < keep.mean() < 0.99 and abs(keep.mean() - record["kept"]) < 1e-3
    assert np.array_equal(out[keep], expected[keep])


def test_without_levelling_every_pixel_outside_the_band_is_the_input():
    photo = _photo("gravel", "wide", gradient=False)
    result = make_tileable(photo, flatten="off")
    keep = _outside_band(result)
    assert np.array_equal(np.asarray(result)[keep], np.asarray(photo)[keep])
    assert not json.loads(result.info["parameters"])["flatten"]


@pytest.mark.parametrize("crop", ["square", "wide"])
def test_brick_joints_continue_through_the_band(crop):
    """The period of the joints measured across the band is the period elsewhere in the wall."""
    photo = _photo("brick", crop, gradient=False)
    result = make_tileable(photo, flatten="off")
    band = json.loads(result.info["parameters"])["band"]
    out = np.asarray(result, dtype=np.float64)
    h, w = out.shape
    whole = lattice.detect(out).period_x
    rolled = np.roll(out, h // 2, axis=0)  # the band across the old top and bottom, in the middle
    across = lattice.detect(rolled[h // 2 - band // 2:h // 2 + band // 2]).period_x
    assert whole is not None and across is not None
    assert abs(across - whole) / whole <= 0.1, (across, whole)


def test_maps_are_repaired_exactly_like_the_colour(tmp_path):
    """A map that is a pixel-wise function of the colour is that function of the result."""
    photo = np.asarray(_photo("grass", "wide", gradient=False))
    colour = Image.fromarray(np.stack([photo, photo // 2, 255 - photo], axis=2))
    rough, height = tmp_path / "rough.png", tmp_path / "height.png"
    Image.fromarray(255 - photo).save(rough)
    Image.fromarray(photo.astype(np.uint16) * 257).save(height)
    result = make_tileable(colour, flatten="off", maps={"roughness": str(rough), "height": str(height)})
    out = np.asarray(result)
    maps = result.info["maps"]
    assert np.array_equal(maps["roughness"].pixels[..., 0], 255 - out[..., 0])
    assert maps["height"].pixels.dtype == np.uint16
    assert np.array_equal(maps["height"].pixels[..., 0], out[..., 0].astype(np.uint16) * 257)


def test_levelling_leaves_normal_maps_alone_and_levels_data_maps_on_their_own():
    photo = _photo("gravel", "square")
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ramp = np.tile(np.linspace(40, 200, 256), (256, 1))[..., None].astype(np.uint8)
    result = tileable.make_tileable(photo, flatten="on", maps={
        "normal": MaterialMap("normal", normal), "height": MaterialMap("height", ramp)})
    keep = _outside_band(result)
    assert np.array_equal(result.info["maps"]["normal"].pixels[keep], normal[keep])  # gathered, never levelled
    height = result.info["maps"]["height"].pixels[..., 0].astype(np.float64)
    assert np.ptp(height[keep]) < 0.5 * np.ptp(ramp)  # its own gradient levelled


def test_one_axis_leaves_the_other_alone():
    photo = _photo("gravel", "wide", gradient=False)
    result = make_tileable(photo, flatten="off", tile="x")
    record = json.loads(result.info["parameters"])
    assert set(record["seam_after"]) == {"x"} and record["seam_after"]["x"] <= 1.1
    changed = ~_outside_band(result)
    rows_changed, cols_changed = changed.any(axis=1), changed.any(axis=0)
    assert rows_changed.all() and not cols_changed[photo.size[0] // 4: 3 * photo.size[0] // 4].any()


def test_alpha_is_carried_with_its_pixels():
    photo = _photo("gravel", "square", gradient=False).convert("RGB")
    alpha = np.asarray(_photo("grass", "square", gradient=False))
    photo.putalpha(Image.fromarray(alpha))
    result = make_tileable(photo, flatten="off")
    assert result.mode == "RGBA"
    out = np.asarray(result)
    keep = _outside_band(result)
    assert np.array_equal(out[..., 3][keep], alpha[keep])


@pytest.mark.parametrize("kwargs, words", [
    ({"band": 200}, "does not fit"),
    ({"band": 4}, "does not fit"),
    ({"tile": "none"}, "tile must be"),
    ({"flatten": "maybe"}, "flatten must be"),
    ({"engine": "magic"}, "no 'magic' engine"),
])
def test_bad_requests_say_what_to_do(kwargs, words):
    with pytest.raises(InputError, match=words):
        make_tileable(_photo("gravel", "square"), **kwargs)


def test_a_map_of_another_aspect_is_refused(tmp_path):
    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((64, 256), np.uint8)).save(odd)
    with pytest.raises(InputError, match="aspect"):
        make_tileable(_photo("gravel", "square"), maps={"roughness": str(odd)})


def test_the_command_writes_result_band_and_maps_and_never_overwrites(tmp_path):
    photo_path, rough = tmp_path / "wall.png", tmp_path / "rough.png"
    _photo("brick", "wide").save(photo_path)
    Image.fromarray(255 - np.asarray(_photo("brick", "wide"))).save(rough)
    command = [sys.executable, "-m", "backend", "make-tileable", str(photo_path), "--out", str(tmp_path / "out"),
               "--map", f"roughness={rough}"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = [p.rsplit("/", 1)[1] for p in first + second]
    assert names == ["wall-tileable.png", "wall-tileable-band.png", "wall-tileable-roughness.png",
                     "wall-tileable-2.png", "wall-tileable-2-band.png", "wall-tileable-2-roughness.png"]
    record = json.loads(Image.open(first[0]).info["parameters"])
    assert record["kind"] == "tileable" and record["engine"] == "patch"


def test_the_service_makes_a_texture_tileable_with_its_maps(tmp_path):
    """The make_tileable request through the real service: a result with the band and the maps."""
    from tests.service_process import ServiceProcess

    photo, rough = tmp_path / "wall.png", tmp_path / "rough.png"
    _photo("gravel", "wide").save(photo)
    Image.fromarray(255 - np.asarray(_photo("gravel", "wide"))).save(rough)
    proc = ServiceProcess(tmp_path)
    try:
        assert "make_tileable" in proc.ask("hello")["requests"]
        job = proc.send("make_tileable", input=str(photo), output_dir=str(tmp_path / "job"),
                        maps={"roughness": str(rough)}, flatten="off")
        events = proc.job_events(job)
        refused = proc.ask("make_tileable", input=str(photo), output_dir=str(tmp_path / "x"), tile="diagonal")
        bad_steps = proc.ask("make_tileable", input=str(photo), output_dir=str(tmp_path / "y"), engine="diffusion",
                             steps=0)
    finally:
        proc.stop()
    assert bad_steps["code"] == "bad_request" and "make_tileable 'steps'" in bad_steps["message"]
    assert [e["type"] for e in events] == ["accepted", "result"]
    (entry,) = events[-1]["files"]
    assert entry["path"].endswith("wall-tileable.png") and entry["band"].endswith("wall-tileable-band.png")
    assert entry["parameters"]["kind"] == "tileable" and entry["parameters"]["seam_after"]["x"] <= 1.1
    out, made = np.asarray(Image.open(entry["path"])), np.asarray(Image.open(entry["band"])) > 0
    assert np.array_equal(np.asarray(Image.open(entry["maps"]["roughness"])), 255 - out)
    assert np.array_equal(out[~made], np.asarray(Image.open(photo))[~made])
    assert refused["code"] == "bad_request" and refused["message"].startswith("make_tileable 'tile'")


# ------------------------------------------------------------------ the diffusion repair (tiny models)


@pytest.fixture(scope="module")
def diffusion_repair(tiny_models, tmp_path_factory):
    """A lit gravel photo 128 x 96 (non-square) with a roughness map, repaired by both engines."""
    folder = tmp_path_factory.mktemp("repair")
    y, x = 13, 7
    arr = skimage.data.gravel()[y:y + 96, x:x + 128].astype(np.float64) * np.linspace(0.7, 1.2, 128)[None, :]
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    Image.fromarray(255 - np.asarray(photo.convert("L"))).save(folder / "rough.png")
    maps = {"roughness": str(folder / "rough.png")}
    patch = make_tileable(photo, maps=maps)
    made = make_tileable(photo, engine="diffusion", steps=4, seed=5, base=str(tiny_models["base"]),
                         ip_adapter=str(tiny_models["ip_adapter"]), maps=maps)
    return patch, made


def _beyond_feather(result) -> np.ndarray:
    import torch

    from backend.diffusion.controls.inpaint import feather

    band = torch.from_numpy((np.asarray(result.info["band"]) > 0).astype(np.float64))[None, None]
    return feather(band, "both")[0, 0].numpy() == 0


def test_the_diffusion_repair_remakes_the_band_and_keeps_every_pixel_beyond_its_feather(diffusion_repair):
    patch, made = diffusion_repair
    record = json.loads(made.info["parameters"])
    assert made.size == patch.size == (128, 96) and record["engine"] == "diffusion"
    keep = _beyond_feather(made)
    assert keep.mean() > 0.6
    a, b = np.asarray(made, np.int16), np.asarray(patch, np.int16)
    assert np.abs(a - b)[keep].max() <= 2  # the (levelled) input, as the weight-free repair keeps it
    band = np.asarray(made.info["band"]) > 0
    assert (np.abs(a - b).max(axis=2) > 2)[band].mean() > 0.9  # the band is generated anew
    rough_patch, rough_made = (r.info["maps"]["roughness"].pixels[..., 0] for r in (patch, made))
    assert np.array_equal(rough_made[keep], rough_patch[keep])  # the map: kept where the colour is kept ...
    assert (rough_made != rough_patch)[band].mean() > 0.3  # ... and following the new pixels in the band


def test_the_diffusion_repair_wraps_around_like_its_own_band(diffusion_repair):
    """Circular padding: the step across the wrap (inside the band) is one of the band's own steps."""
    _, made = diffusion_repair
    out = np.asarray(made, np.float64)
    band = np.asarray(made.info["band"]) > 0
    for axis in (0, 1):
        lines = np.moveaxis(out, axis, 0)
        whole = np.moveaxis(band, axis, 0).mean(axis=1) > 0.9  # lines wholly inside the band
        steps = np.abs(np.diff(lines, axis=0)).mean(axis=(1, 2))
        inside = [steps[i] for i in range(len(steps)) if whole[i] and whole[i + 1]]
        assert len(inside) >= 4
        assert np.abs(lines[0] - lines[-1]).mean() <= np.percentile(inside, 90), axis


def test_the_service_runs_the_diffusion_repair_with_its_models(tiny_models, tmp_path):
    from tests.service_process import ServiceProcess

    photo = tmp_path / "wall.png"
    _photo("gravel", "square").crop((0, 0, 96, 64)).save(photo)
    proc = ServiceProcess(tmp_path)
    try:
        job = proc.send("make_tileable", input=str(photo), output_dir=str(tmp_path / "job"), engine="diffusion",
                        steps=2, seed=3, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]))
        events = proc.job_events(job)
    finally:
        proc.stop()
    assert [e["type"] for e in events if e["type"] != "progress"] == ["accepted", "result"]
    assert any(e["type"] == "progress" for e in events)  # the diffusion loop's steps are reported
    (entry,) = events[-1]["files"]
    assert entry["parameters"]["engine"] == "diffusion" and entry["parameters"]["kind"] == "tileable"


def test_the_diffusion_repair_needs_sides_in_multiples_of_8(tiny_models):
    with pytest.raises(InputError, match="multiples of 8"):
        make_tileable(_photo("gravel", "square").crop((0, 0, 100, 100)), engine="diffusion",
                      base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]))
