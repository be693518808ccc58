"""Whole materials, wired: maps= / derive= through the API, the CLI and the service, one file per map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.api import generate_variants
from backend.errors import InputError
from backend.framing import center_square
from backend.materials import derive as D
from backend.materials import variants as material
from backend.materials.maps import fit, read_map
from backend.metrics import seam_score
from backend.service.job_request_checks import check_map_files
from backend.service.protocol import ProtocolError
from backend.service.request_checks import parse_request
from tests.service_process import ServiceProcess
from tests.test_materials import _png16_rgb, luminance8, normal_of_pixel

SIZE = 256


@pytest.fixture(scope="module")
def brick_set(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's brick at SIZE² as a tinted RGB base colour, with roughness = 255 - luminance
    and a normal map made pixel-wise from the colour, as files."""
    import skimage.data

    folder = tmp_path_factory.mktemp("brick_set")
    gray = np.asarray(Image.fromarray(skimage.data.brick()).resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float64)
    rgb = np.clip(np.rint(gray[..., None] * [1.0, 0.85, 0.7]), 0, 255).astype(np.uint8)
    paths = {"base": folder / "brick.png", "roughness": folder / "brick_rough.png",
             "normal": folder / "brick_nrm.png"}
    Image.fromarray(rgb).save(paths["base"])
    Image.fromarray(255 - luminance8(rgb)).save(paths["roughness"])
    Image.fromarray(normal_of_pixel(rgb)).save(paths["normal"])
    return paths


def _periodic(arr: np.ndarray, limit: float = 1.6) -> None:
    scores = seam_score(arr.astype(np.float64) / arr.max())
    assert max(scores.values()) < limit, scores


def test_patch_variant_map_files_keep_every_pixel_relation_exactly(brick_set, tmp_path):
    images = generate_variants(brick_set["base"], engine="patch", size=SIZE, variants=2, seed=5,
                               maps={"roughness": str(brick_set["roughness"]), "normal": str(brick_set["normal"])})
    for i, image in enumerate(images):
        path = tmp_path / f"v{i}.png"
        image.save(path)
        written = material.save(image, path)
        assert written == {name: str(tmp_path / f"v{i}-{name}.png") for name in ("roughness", "normal")}
        colour = np.asarray(Image.open(path).convert("RGB"))
        rough, normal = read_map(written["roughness"], "roughness"), read_map(written["normal"], "normal")
        assert np.array_equal(rough.pixels[..., 0], 255 - luminance8(colour))
        assert np.array_equal(normal.pixels, normal_of_pixel(colour))
        for name in written:  # the same parameters record as the variant
            assert Image.open(written[name]).info["parameters"] == image.info["parameters"]
        _periodic(colour, 1.3)
        _periodic(rough.pixels, 1.3)
        _periodic(normal.pixels, 1.3)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_a_16_bit_colour_png_map_keeps_its_low_bits_through_the_patch_engine(brick_set, tmp_path):
    rgb = np.asarray(Image.open(brick_set["base"]).convert("RGB"))
    deep = normal_of_pixel(rgb).astype(np.uint16) * 257 + rgb.astype(np.uint16)  # low bytes differ from high
    _png16_rgb(tmp_path / "normal16.png", deep)
    [image] = generate_variants(brick_set["base"], engine="patch", size=SIZE, variants=1, seed=5,
                                maps={"normal": str(tmp_path / "normal16.png")})
    image.save(tmp_path / "v.png")
    written = material.save(image, tmp_path / "v.png")
    colour = np.asarray(Image.open(tmp_path / "v.png").convert("RGB"))
    normal = read_map(written["normal"], "normal").pixels
    assert normal.dtype == np.uint16  # 16 bits kept (written as a 16-bit TIFF)
    assert np.array_equal(normal, normal_of_pixel(colour).astype(np.uint16) * 257 + colour.astype(np.uint16))


def test_patch_maps_of_another_size_are_scaled_with_the_base_colour(brick_set, tmp_path):
    big = tmp_path / "rough_big.png"
    Image.open(brick_set["roughness"]).resize((2 * SIZE, 2 * SIZE), Image.Resampling.NEAREST).save(big)
    small, = generate_variants(brick_set["base"], engine="patch", size=128, seed=2, maps={"roughness": str(big)})
    rough = small.info["maps"]["roughness"].pixels[..., 0].astype(np.int64)
    expected = 255 - luminance8(np.asarray(small)).astype(np.int64)
    assert rough.shape == (128, 128)
    # two Lanczos resizes (8-bit RGB vs float gray) disagree by rounding only
    assert np.abs(rough - expected).mean() < 2.0


# ------------------------------------------------------------------------------------ diffusion


def _diffusion(tiny_models, reference, **kw):
    return generate_variants(reference, engine="diffusion", base=str(tiny_models["base"]),
                             ip_adapter=str(tiny_models["ip_adapter"]), size=64, steps=2, seed=3, **kw)


def test_diffusion_variants_get_one_periodic_file_per_map_and_a_fidelity(tiny_models, color_texture_path,
                                                                          tmp_path):
    maps_in = {"roughness": tmp_path / "r.png", "normal": tmp_path / "n.png"}
    rgb = np.asarray(Image.open(color_texture_path).convert("RGB"))
    Image.fromarray(255 - luminance8(rgb)).save(maps_in["roughness"])
    Image.fromarray(normal_of_pixel(rgb)).save(maps_in["normal"])
    images = _diffusion(tiny_models, color_texture_path, variants=2, derive=["height"],
                        maps={k: str(v) for k, v in maps_in.items()})
    for i, image in enumerate(images):
        record = json.loads(image.info["parameters"])
        assert 0 <= record["correspondence_rmse"] < 0.5 and 0 <= record["correspondence_mae"] <= record["correspondence_rmse"]
        path = tmp_path / f"d{i}.png"
        image.save(path)
        written = material.save(image, path)
        assert sorted(written) == ["height", "normal", "roughness"]
        assert all(Path(p).exists() for p in written.values())
        normal = read_map(written["normal"], "normal").pixels
        lengths = np.linalg.norm(D.decode_normals(normal, 255), axis=2)
        assert np.abs(lengths - 1).max() < 0.01  # gathered, never blended: still unit normals
        for name in written:
            _periodic(read_map(written[name], name).pixels, 2.0)


def decode_shifted_copies(monkeypatch, image: Image.Image, shift: tuple[int, int]) -> None:
    """Make the diffusion engine's decoder return `image` rolled by `shift` for every variant: a
    variant whose correspondence to the reference is known exactly."""
    from backend.diffusion import vae

    monkeypatch.setattr(vae, "decode", lambda pipe, latents, *options: [
        Image.fromarray(np.roll(np.asarray(image), shift, axis=(0, 1))) for _ in range(len(latents))])


def test_diffusion_maps_of_a_shifted_copy_are_the_shifted_maps_exactly(tiny_models, color_texture_path,
                                                                       tmp_path, monkeypatch):
    shift = (9, -21)
    scaled = center_square(Image.open(color_texture_path).convert("RGB"), 64)
    decode_shifted_copies(monkeypatch, scaled, shift)
    rough_path = tmp_path / "r.png"
    rough = (np.arange(128 * 128) % 251).reshape(128, 128).astype(np.uint8)  # unrelated to the colour
    Image.fromarray(rough).save(rough_path)
    image, = _diffusion(tiny_models, color_texture_path, maps={"roughness": str(rough_path)})
    record = json.loads(image.info["parameters"])
    assert record["correspondence_rmse"] == 0 and record["correspondence_mae"] == 0
    expected = np.roll(fit(read_map(rough_path, "roughness"), 64, 64).pixels, shift, axis=(0, 1))
    assert np.array_equal(image.info["maps"]["roughness"].pixels, expected)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_derives_and_writes_maps_beside_each_variant(brick_set, tmp_path, capsys):
    from backend.cli import main

    assert main(["generate", str(brick_set["base"]), "--out", str(tmp_path), "--engine", "patch", "--size", "128",
                 "--seed", "4", "--no-preview", "--derive", "height,normal,roughness",
                 "--map", f"rough_given={brick_set['roughness']}"]) == 0
    printed = capsys.readouterr().out.split()
    variant = Path(printed[0])
    assert printed[1:] == [str(variant.with_name(f"{variant.stem}-{n}.png"))
                           for n in ("rough_given", "height", "normal", "roughness")]
    colour = np.asarray(Image.open(variant).convert("RGB"))
    normal = read_map(printed[3], "normal").pixels
    assert np.array_equal(normal, D.derive(colour, ["normal"])["normal"].pixels)  # from the variant itself
    for path, name in zip(printed[1:], ("rough_given", "height", "normal", "roughness"), strict=True):
        _periodic(read_map(path, name).pixels, 1.6)


@pytest.mark.parametrize("args, message", [
    (["--map", "roughness"], "is not NAME=PATH"),
    (["--map", "Rough=x.png"], "names: lower-case letters"),
    (["--map", "roughness=/no/such/file.png"], "not found"),
    (["--derive", "height,gloss"], "derive"),
    (["--derive", "height", "--map", "height={base}"], "both given and asked to be derived"),
    (["--normals", "marigold"], "only applies to a derived normal map"),
])
def test_cli_refuses_bad_map_inputs_clearly(brick_set, tmp_path, capsys, args, message):
    from backend.cli import main

    args = [a.replace("{base}", str(brick_set["base"])) for a in args]
    assert main(["generate", str(brick_set["base"]), "--out", str(tmp_path), "--engine", "patch",
                 "--size", "64", *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_map_that_is_not_an_image_is_refused_before_generating(brick_set, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        generate_variants(brick_set["base"], engine="patch", size=64, maps={"roughness": str(text)})


# -------------------------------------------------------------------------------------- service


def _request(**fields) -> bytes:
    return json.dumps({"id": "g", "type": "generate", "input": "/abs/in.png", "output_dir": "/abs/out",
                       **fields}).encode()


@pytest.mark.parametrize("maps, message", [
    ({"roughness": "relative.png"}, "absolute path"),
    ({"roughness": "/no/such/map.png"}, "not an existing regular file"),
    ({"Rough": "/x.png"}, "invalid maps"),
    ({"roughness": 3}, "invalid maps"),
    ("/a.png", "invalid maps"),
])
def test_protocol_checks_maps_before_queueing(maps, message):
    with pytest.raises(ProtocolError, match=message) as e:  # existence: after the service's confinement check
        check_map_files(parse_request(_request(maps=maps)).fields["params"].maps, "g")
    assert e.value.code == "bad_request" and e.value.hint


def test_protocol_refuses_a_folder_as_map_and_unknown_derived_names(tmp_path):
    with pytest.raises(ProtocolError, match="is a folder"):
        check_map_files(parse_request(_request(maps={"roughness": str(tmp_path)})).fields["params"].maps, "g")
    with pytest.raises(ProtocolError, match="derive"):
        parse_request(_request(derive=["gloss"]))
    ok = parse_request(_request(derive=["normal"], maps={"roughness": str(Path(__file__))}))
    assert ok.fields["params"].derive == ("normal",)


def test_service_job_with_maps_lists_them_per_variant(brick_set, tmp_path):
    proc = ServiceProcess(tmp_path)
    try:
        hello = proc.ask("hello")
        assert {"maps", "derive", "normals"} <= set(hello["parameters"]["fields"])
        job = proc.send("generate", input=str(brick_set["base"]), output_dir=str(tmp_path / "out"), engine="patch",
                        size=SIZE, variants=2, seed=1, maps={"roughness": str(brick_set["roughness"])},
                        derive=["normal"])
        result = proc.job_events(job)[-1]
        assert result["type"] == "result", result
        for entry in result["files"]:
            variant = Path(entry["path"])
            assert entry["maps"] == {n: str(variant.with_name(f"{variant.stem}-{n}.png")) for n in ("roughness", "normal")}
            colour = np.asarray(Image.open(variant).convert("RGB"))
            assert np.array_equal(read_map(entry["maps"]["roughness"], "roughness").pixels[..., 0],
                                  255 - luminance8(colour))
        bad = proc.send("generate", input=str(brick_set["base"]), output_dir=str(tmp_path / "out"), engine="patch",
                        maps={"roughness": str(tmp_path / "missing.png")})
        error = proc.job_events(bad)[-1]
        assert error["type"] == "error" and error["code"] == "bad_request" and "maps.roughness" in error["message"]
    finally:
        assert proc.stop() == 0, proc.stderr_tail()
    assert proc.bad_lines == []


def test_a_failed_job_removes_its_map_files_too(brick_set, tmp_path):
    from backend.params import GenerationParams
    from backend.service.jobs import Job, JobOutput

    images = generate_variants(brick_set["base"], engine="patch", size=64, derive=["height", "roughness"])
    job = Job(id="j", input=str(brick_set["base"]), output_dir=str(tmp_path / "job"), params=GenerationParams())
    output = JobOutput(job)
    output.check()
    files = output.write_results(images)
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == sorted(
        [".job-j.done.json", Path(files[0]["path"]).name, *(Path(p).name for p in files[0]["maps"].values())])
    assert all(Path(p).exists() for p in files[0]["maps"].values())
    output.discard()
    assert list(tmp_path.iterdir()) == []


def test_maps_only_derives_the_inputs_own_maps_at_its_size(brick_set):
    """Add Missing Maps' request: no variant, the input's own derived maps, equal to derive() of it."""
    from backend.api import generate
    from backend.params import GenerationParams

    params = GenerationParams.build({}, engine="patch", derive=["height", "normal", "roughness"])
    image, = generate(brick_set["base"], params, maps_only=True)
    colour = np.asarray(Image.open(brick_set["base"]).convert("RGB"))
    assert np.array_equal(np.asarray(image), colour)  # the input itself, not a variant
    expected = D.derive(colour, ["height", "normal", "roughness"])
    assert sorted(image.info["maps"]) == ["height", "normal", "roughness"]
    for name, m in image.info["maps"].items():
        assert np.array_equal(m.pixels, expected[name].pixels), name
    assert json.loads(image.info["parameters"])["derive"] == ["height", "normal", "roughness"]


@pytest.mark.parametrize("fields", [{"maps_only": True}, {"maps_only": 1, "derive": ["normal"]},
                                    {"maps_only": True, "derive": ["normal"], "maps": {"roughness": __file__}}])
def test_protocol_maps_only_needs_derive_and_no_maps(fields):
    with pytest.raises(ProtocolError, match="maps_only") as e:
        parse_request(_request(**fields))
    assert e.value.code == "bad_request" and e.value.hint
    ok = parse_request(_request(maps_only=True, derive=["normal"]))
    assert ok.fields["maps_only"] is True and not parse_request(_request()).fields["maps_only"]


def test_service_maps_only_job_writes_the_maps_beside_the_input_copy(brick_set, tmp_path):
    proc = ServiceProcess(tmp_path)
    try:
        job = proc.send("generate", input=str(brick_set["base"]), output_dir=str(tmp_path / "out"),
                        derive=["normal", "roughness"], maps_only=True)
        result = proc.job_events(job)[-1]
        assert result["type"] == "result", result
        entry, = result["files"]
        assert Path(entry["path"]).name == "brick-maps.png"
        assert entry["maps"] == {n: str(tmp_path / "out" / f"brick-maps-{n}.png") for n in ("normal", "roughness")}
        colour = np.asarray(Image.open(brick_set["base"]).convert("RGB"))
        normal = read_map(entry["maps"]["normal"], "normal")
        assert normal.size == (SIZE, SIZE) and np.array_equal(normal.pixels, D.derive(colour, ["normal"])["normal"].pixels)
    finally:
        assert proc.stop() == 0, proc.stderr_tail()
