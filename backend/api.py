"""The Python API: `generate_variants` (keywords in), `generate` (a GenerationParams in); the CLI and
the service go through them."""

from __future__ import annotations

import inspect
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable

from PIL import Image

from backend import engines, report_card
from backend.errors import InputError, ModelsMissingError
from backend.images import load_reference
from backend.materials import variants as material
from backend.params import DiffusionOptions, GenerationParams, specs

log = logging.getLogger(__name__)

OnStep = Callable[[int, int, "Image.Image | None"], None]


def generate_variants(reference: str | os.PathLike | Image.Image, *, base: str | None = None,
                      ip_adapter: str | None = None, latents=None, on_step: OnStep | None = None,
                      cancel: threading.Event | None = None, **extra) -> list[Image.Image]:
    """Make `variants` tileable variants of `reference`; see docs/guide/api-and-cli.md, "Python API".

    The keywords are the fields of backend.params.GenerationParams (engine, variants, seed, steps,
    size, tile, balance, appearance, ...; help() shows them with their defaults) and, in `extra`,
    the engine options (e.g. ad_iterations). Returns one PIL image per variant.
    `maps={"roughness": path, ...}` (the material's other maps) and `derive=["height", "normal",
    "roughness"]` give each image `image.info["maps"]`: {name: backend.materials.maps.MaterialMap},
    rearranged like the image (docs/guide/materials.md, "Whole materials"); save them with
    backend.materials.variants.save(image, image_path).
    `image.info["parameters"]` holds its parameters as JSON, including its own seed (variant i of a
    call with seed s has seed s + i, so it can be reproduced alone) and the engine actually used.
    Raises backend.errors.InputError for bad input, ModelsMissingError when a model is absent,
    CancelledError when `cancel` is set.
    """
    fields = {k: extra.pop(k) for k in GenerationParams.field_names() if k in extra}
    params = GenerationParams.build(extra, **fields)
    return generate(reference, params, base=base, ip_adapter=ip_adapter, latents=latents, on_step=on_step,
                    cancel=cancel)


def _signature() -> inspect.Signature:
    """generate_variants' signature with every parameter and its default, read from backend.params."""
    own = inspect.signature(generate_variants).parameters
    keyword = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, (_, default) in specs(GenerationParams).items()]
    return inspect.Signature([own["reference"], own["base"], own["ip_adapter"], *keyword, own["latents"],
                              own["on_step"], own["cancel"], own["extra"]])


generate_variants.__signature__ = _signature()


_RESTYLE = specs(DiffusionOptions)  # the defaults below are the declared ones


def restyle(reference: str | os.PathLike | Image.Image, prompt: str, *,
            strength: float = _RESTYLE["restyle_strength"][1], mask: str | os.PathLike | None = None, points=None,
            box=None, mask_mode: str = _RESTYLE["mask_mode"][1],
            sam: str | None = None, **kw) -> list[Image.Image]:
    """Restyle `reference` by the text `prompt`, keeping its structure (docs/guide/restyle-and-sketch.md, "Restyle").

    strength: 0 keeps all the structure, 1 follows the text alone; mask: an image (white = selected),
    or points ((x, y) or (x, y, label 1/0), pixel coordinates of the input) and/or a box
    (x0, y0, x1, y1) for Segment Anything (`sam`: its folder or hub id); mask_mode: keep-structure
    (the structure is kept inside the mask) or edit-inside (only the masked part changes). The other
    keywords are generate_variants' (variants, seed, steps, size, tile, negative_prompt, base, ...).
    The mask used is in `image.info["restyle_mask"]` (mode "L", the output's size) when there is one.
    """
    return generate_variants(reference, engine="diffusion", appearance="none", restyle_prompt=prompt,
                             restyle_strength=strength, mask=None if mask is None else str(mask), mask_points=points,
                             mask_box=box, mask_mode=mask_mode, sam=sam, **kw)


def make_tileable(image: str | os.PathLike | Image.Image, *, engine: str = "auto", band: int | None = None,
                  flatten: str = "auto", tile: str = "both", maps: dict[str, str] | None = None, seed: int = 0,
                  steps: int | None = None, base: str | None = None, ip_adapter: str | None = None,
                  on_step=None, cancel: threading.Event | None = None) -> Image.Image:
    """The image itself made tileable, at its own size (backend/tileable.py): its lighting levelled
    (`flatten` auto|on|off), a band along its seams re-made, every other pixel kept. `maps`
    ({name: path}) are repaired alike: `info["maps"]` (save with backend.materials.variants.save);
    `info["band"]` shows the re-made pixels. `engine`: "auto" and "patch" re-make the band by
    quilting (weight-free: every pixel outside the band is the input's); "diffusion" then generates
    the band anew with the diffusion loop in the input's look (backend/tileable_diffusion.py; `seed`,
    `steps`, `base`, `ip_adapter` as for generate_variants; sides multiples of 8)."""
    from backend import tileable
    from backend.materials.maps import read_map

    if engine not in ("auto", "patch", "diffusion"):
        raise InputError(f"make-tileable has no {engine!r} engine", hint="use engine auto, patch or diffusion")
    ref = load_reference(image)
    picture = ref.rgb.convert("L") if ref.grayscale else ref.rgb
    if ref.alpha is not None:
        picture = picture.convert("RGB")
        picture.putalpha(ref.alpha)
    given = {}
    for name, path in (maps or {}).items():
        try:
            given[name] = read_map(path, name)
        except InputError as e:
            raise InputError(f"map {name!r}: {e.message}", hint=e.hint) from e
    result = tileable.make_tileable(picture, band=band, flatten=flatten, tile=tile, maps=given, cancel=cancel)
    record = json.loads(result.info["parameters"]) | {"engine": "patch"} | ref.record()
    if engine == "diffusion":
        result, details = _diffusion_band(result, ref, tile, seed=seed, steps=steps, base=base, ip_adapter=ip_adapter,
                                          on_step=on_step, cancel=cancel)
        record |= details
    result.info["parameters"] = json.dumps(record, sort_keys=True)
    return result


def _diffusion_band(result: Image.Image, ref, tile: str, **kw) -> tuple[Image.Image, dict]:
    """The weight-free repair's `result` with its band generated anew (backend/tileable_diffusion.py);
    its maps follow the new pixels through the correspondence; (the image, what the record gains)."""
    import numpy as np

    from backend.materials import correspondence
    from backend.materials.maps import gather_map
    from backend.metrics import seam_score
    from backend.tileable_diffusion import regenerate_band

    repaired = np.asarray(result.convert("RGB"))
    band = np.asarray(result.info["band"], np.float32) / 255.0
    made, changed = regenerate_band(repaired, ref.rgb, band, tile, **kw)
    out = Image.fromarray(made, "RGB")
    if result.mode == "L":
        out = out.convert("L")
    elif result.mode == "RGBA":
        out.putalpha(result.getchannel("A"))
    coords = np.stack(np.mgrid[:made.shape[0], :made.shape[1]], axis=2).astype(np.int32)
    if result.info["maps"] and changed.any():
        coords[changed] = correspondence.correspond(made, repaired, seed=kw.get("seed", 0)).coords[changed]
    out.info["maps"] = {name: gather_map(m, coords) for name, m in result.info["maps"].items()}
    out.info["band"] = result.info["band"]
    axes = ("x", "y") if tile == "both" else (tile,)
    seams = seam_score(np.asarray(out.convert("L" if out.mode == "L" else "RGB")))
    kept = 1.0 - float(np.maximum(band > 0, changed).mean())
    return out, {"engine": "diffusion", "seam_after": {a: round(seams[a], 3) for a in axes}, "kept": round(kept, 4),
                 "diffusion_changed": round(float(changed.mean()), 4)}


def make_tileset(texture: str | os.PathLike | Image.Image, *, colours: int = 2, size: int | None = None,
                 padding: int = 8, engine: str = "auto", maps: dict[str, str] | None = None, seed: int = 0,
                 steps: int | None = None, base: str | None = None, ip_adapter: str | None = None,
                 cancel: threading.Event | None = None, on_step=None):
    """A Wang tile set of `texture` (docs/guide/tile-sets.md): `colours`**4 tiles of `size` px whose coded
    edges match, each with `padding` px around it in the atlas. Returns a backend.tileset.atlas.TileSet:
    `.atlas` (PIL image), `.maps` (the maps' atlases), `.save(folder, stem)` writes the atlases and
    `<stem>-wang.json`. `engine`: auto, patch (weight-free) or diffusion (`steps`, `base`, `ip_adapter`:
    its denoising steps and models)."""
    from backend.tileset.make import make_tileset as make

    return make(texture, colours=colours, size=size, padding=padding, engine=engine, maps=maps, seed=seed, steps=steps,
                base=base, ip_adapter=ip_adapter, cancel=cancel, on_step=on_step)


def tileset_layout(record: str | os.PathLike, cells, *, seed: int = 0) -> Image.Image:
    """`cells` ("NxM" or (N, M)) of the tile set saved as `record` (its `<stem>-wang.json`) laid out by
    the rule Blender's node group computes, with the period (N, M): one tileable image, its maps in
    `info["maps"]` (save with backend.materials.variants.save)."""
    from backend.tileset.make import render_layout

    return render_layout(record, cells, seed)


def derive_maps(reference: str | os.PathLike | Image.Image, params: GenerationParams, *,
                cancel: threading.Event | None = None) -> list[Image.Image]:
    """The reference's own derived maps (`params.derive`), no variant made: one image, the
    reference as read (8-bit), whose `info["maps"]` holds the maps at its size (the service's
    generate request with `maps_only`; Blender's Add Missing Maps)."""
    ref = load_reference(reference)
    image = ref.rgb.convert("L") if ref.grayscale else ref.rgb.copy()
    image.info["maps"], _ = material.follow(None, ref, params, image, {}, params.seed or 0, cancel)
    image.info["parameters"] = json.dumps({"derived_from": ref.source, "derive": list(params.derive),
                                           "normals": params.normals}, sort_keys=True)
    return [image]


def generate(reference: str | os.PathLike | Image.Image, params: GenerationParams, *, base: str | None = None,
             ip_adapter: str | None = None, latents=None, on_step: OnStep | None = None,
             cancel: threading.Event | None = None, maps_only: bool = False) -> list[Image.Image]:
    """Make the variants `params` (validated, e.g. by GenerationParams.build) asks for; with
    `maps_only`, no variant but the input's own derived maps (`derive_maps`)."""
    if maps_only:
        return derive_maps(reference, params, cancel=cancel)
    if params.seed is None:
        params = params.replace(seed=secrets.randbelow(2**31))
    ref = load_reference(reference)
    given = material.load(params, ref.size)  # bad maps fail before anything is generated
    engine_name, why = engines.resolve(params.engine, base, ip_adapter)
    log.info(why)
    if params.sketch and engine_name == "patch":
        raise InputError(f"a sketch needs the diffusion engine; {why}",
                         hint="run `python -m backend download-models`, or generate without --sketch")
    if engine_name != "diffusion" and params.diffusion.restyle_prompt:
        raise ModelsMissingError(f"restyle needs the diffusion engine, and {why}",
                                 hint="run `python -m backend download-models`, or pass base / ip_adapter")
    engine = engines.get_engine(engine_name)
    images = engine.generate(
        ref, params, base=base, ip_adapter=ip_adapter, latents=latents, on_step=on_step, cancel=cancel,
    )
    judge = report_card.MaterialJudge(ref.rgb, given, params.tile)
    record = params.to_dict(engine_name) | {
        "engine": engine_name, "batch_seed": params.seed, **ref.record(), "base": base,
        "ip_adapter": ip_adapter,
    }
    for i, image in enumerate(images):
        if ref.grayscale and image.mode not in ("L", "LA"):  # LA: the patch engine carries alpha
            image = image.convert("L")
            images[i] = image
        engine_record = image.info.pop("engine_parameters", {})
        if material.wanted(params):
            image.info["maps"], maps_record = material.follow(engine, ref, params, image, given, params.seed + i,
                                                              cancel)
            engine_record = engine_record | maps_record
        image.info.pop("source_coords", None)
        card = judge.card(image, image.info.get("maps"), clip=image.info.pop("clip_similarity", None))
        if engine_name == "diffusion" and params.sampler == "fast":
            card = report_card.few_step_gate(card)
            if card["remake_full"]:
                text = (f"variant {i} (seed {params.seed + i}, {params.fast_steps} fast steps): "
                        f"{report_card.REMAKE_FULL_HINT} (look {card['look']:.2f} > {report_card.LOOK_LIMIT})")
                log.warning(text)
                engine_record = engine_record | {"warnings": [*engine_record.get("warnings", []), text]}
        image.info["parameters"] = json.dumps(record | {"seed": params.seed + i, "variant": i, "card": card}
                                              | engine_record, sort_keys=True)
    return images
