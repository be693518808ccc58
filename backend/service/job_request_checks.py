"""The field checks of the requests that queue a job: generate, restyle, upscale, make_tileable,
tileset and tileset_layout (docs/PROTOCOL.md, "Requests"). Every field is checked here, so a bad job
request is refused before it is queued; `parse_generate` is shared with `python -m backend batch`.
"""

from __future__ import annotations

import math
import os

from backend.errors import InputError
from backend.params import UPSCALE_FACTORS, GenerationParams
from backend.service.protocol import (
    DEFAULT_PREVIEW_EVERY,
    GENERATE_FIELDS,
    RESTYLE_FIELDS,
    RESTYLE_OPTIONS,
    START_OPTIONS,
    TILEABLE_FIELDS,
    TILESET_FIELDS,
    TILESET_LAYOUT_FIELDS,
    UPSCALE_FIELDS,
    ProtocolError,
    bad,
    only,
    short,
)


def _check_path(fields: dict, name: str, request_id) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value or "\0" in value:
        bad(request_id, f"generate needs '{name}': a path string, got {short(value)}",
             f"pass '{name}' as an absolute path")
    if not os.path.isabs(value):
        bad(request_id, f"generate '{name}' must be an absolute path, got {short(value)}",
             "the service's working folder is not yours: resolve the path before sending it")
    return value


def _check_generate(fields: dict, request_id) -> dict:
    """Check every generate field here, so a bad request is refused before it is queued."""
    only(fields, GENERATE_FIELDS, "generate", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    api = {k: fields[k] for k in GenerationParams.field_names() if k in fields}
    if api.get("sketch"):  # "" = no sketch
        api["sketch"] = _check_path(fields, "sketch", request_id)
    for name in ("variants", "steps", "size"):  # JSON has one number type: accept 4.0 as 4
        if name in api:
            api[name] = _whole(api[name])
    out |= _models(fields, request_id)
    tiled_preview = fields.get("tiled_preview", False)
    if not isinstance(tiled_preview, bool):
        bad(request_id, f"generate 'tiled_preview' must be true or false, got {short(tiled_preview)}",
             "set tiled_preview to true to also write a 3x3 tiled image of each variant")
    out["tiled_preview"] = tiled_preview
    every = fields.get("preview_every", DEFAULT_PREVIEW_EVERY)
    if not isinstance(every, int) or isinstance(every, bool) or not 0 <= every <= 1000:
        bad(request_id, f"generate 'preview_every' must be an integer from 0 to 1000, got {short(every)}",
             "0 writes no previews; n writes one every n steps")
    out["preview_every"] = every
    extra = fields.get("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) and k.isidentifier() for k in extra):
        bad(request_id, f"generate 'extra' must be an object of engine options, got {short(extra)}",
             "pass engine-specific options as {\"extra\": {\"name\": value}}")
    for name in sorted(set(extra) & set(START_OPTIONS)):
        bad(request_id, f"generate 'extra' may not set {name}: it is a start option of the service",
             f"whoever starts the backend decides: `python -m backend serve {START_OPTIONS[name]}`")
    try:
        out["params"] = GenerationParams.build(extra, **api)
    except InputError as e:
        raise ProtocolError("bad_request", f"generate: {e.message}", e.hint, request_id) from None
    for name, path in out["params"].maps.items():
        _check_map_file(name, path, request_id)
    out["maps_only"] = fields.get("maps_only", False)
    if out["maps_only"] is not False and (out["maps_only"] is not True or not out["params"].derive
                                          or out["params"].maps):
        bad(request_id, f"generate 'maps_only' must be true with a 'derive' list and no 'maps', or false; got "
             f"{short(out['maps_only'])} with derive {list(out['params'].derive)}",
             'for the input\'s own maps send "maps_only": true, "derive": ["height", "normal", "roughness"]')
    return out


def _models(fields: dict, request_id) -> dict:
    """`base` and `ip_adapter`: a non-empty string or null (messages name generate; see _renamed)."""
    out = {}
    for name in ("base", "ip_adapter"):
        value = fields.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            bad(request_id, f"generate '{name}' must be a non-empty string or null, got {short(value)}",
                 "pass a hub id, a model folder or a checkpoint file, or leave it out for the service default")
        out[name] = value
    return out


def _maps(fields: dict, kind: str, request_id) -> dict:
    """A request's `maps`: {name: absolute path}."""
    maps = fields.get("maps", {})
    if not isinstance(maps, dict) or not all(isinstance(v, str) for v in maps.values()):
        bad(request_id, f"{kind} 'maps' must be an object of name: path, got {short(maps)}",
             '{"maps": {"roughness": "/abs/rough.png"}}')
    for name, path in maps.items():
        _check_map_file(name, path, request_id)
    return dict(maps)


def _whole(value):
    """4.0 as 4, also inside a [w, h] pair; anything else as it is (the parameter's check judges it)."""
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _check_upscale(fields: dict, request_id) -> dict:
    only(fields, UPSCALE_FIELDS, "upscale", request_id)
    if fields.get("factor") not in UPSCALE_FACTORS or isinstance(fields.get("factor"), bool):  # True == 1
        bad(request_id, f"upscale needs 'factor': 2 or 4, got {short(fields.get('factor'))}", '"factor": 2 or 4')
    extra = {name: fields[key] for key, name in (("strength", "upscale_strength"), ("window", "window")) if key in fields}
    try:  # strength and window are the diffusion options upscale_strength and window
        return _check_generate({k: v for k, v in fields.items() if k not in ("factor", "strength", "window")}
                               | {"extra": extra}, request_id) | {"upscale": fields["factor"]}
    except ProtocolError as e:  # the checks are generate's: name the request that was sent
        e.message = "upscale" + e.message.removeprefix("generate")
        raise


def _check_map_file(name: str, path: str, request_id) -> None:
    """A map's path is checked like 'input' (absolute); whether it exists is `check_map_files`' (after
    the service's confinement check: a path it may not read gets no answer about its existence)."""
    _check_path({"maps." + name: path}, "maps." + name, request_id)


def check_map_files(maps: dict, request_id) -> None:
    """Every map names a regular file now, else `bad_request`."""
    for name, path in maps.items():
        _check_existing_map(name, path, request_id)


def _check_existing_map(name: str, path: str, request_id) -> None:
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "not an existing regular file"
        bad(request_id, f"generate 'maps.{name}' is {what}: {short(path)}",
             "pass the absolute path of the map's image file (PNG or TIFF)")


def _seed_and_steps(fields: dict, kind: str, request_id) -> tuple[int, int | None]:
    """A diffusion job's `seed` (default 0) and `steps` (default: the engine's)."""
    seed, steps = _whole(fields.get("seed", 0)), _whole(fields.get("steps"))
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        bad(request_id, f"{kind} 'seed' must be a whole number >= 0, got {short(seed)}", '"seed": 0')
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 200):
        bad(request_id, f"{kind} 'steps' must be an integer from 1 to 200 or null, got {short(steps)}",
            "leave it out for the diffusion engine's default")
    return seed, steps


def _check_make_tileable(fields: dict, request_id) -> dict:
    from backend.tileable import FLATTENS, TILES

    only(fields, TILEABLE_FIELDS, "make_tileable", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    for name, allowed, default in (("engine", ("auto", "patch", "diffusion"), "auto"), ("flatten", FLATTENS, "auto"),
                                   ("tile", TILES, "both")):
        value = fields.get(name, default)
        if value not in allowed:
            bad(request_id, f"make_tileable '{name}' must be one of {', '.join(allowed)}, got {short(value)}",
                 f'e.g. "{name}": "{default}"')
        out[name] = value
    band = fields.get("band")
    if band is not None and (not isinstance(band, int) or isinstance(band, bool) or not 8 <= band <= 4096):
        bad(request_id, f"make_tileable 'band' must be an integer from 8 to 4096 (pixels) or null, got "
             f"{short(band)}", "leave it out to let the texture's scale decide")
    out["band"] = band
    out["maps"] = _maps(fields, "make_tileable", request_id)
    out["seed"], out["steps"] = _seed_and_steps(fields, "make_tileable", request_id)
    return out | _models(fields, request_id)


def _check_tileset(fields: dict, request_id) -> dict:
    from backend.tileset.atlas import COLOURS
    from backend.tileset.make import DEFAULT_PADDING, ENGINES

    only(fields, TILESET_FIELDS, "tileset", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    colours, engine = _whole(fields.get("colours", 2)), fields.get("engine", "auto")
    if colours not in COLOURS or isinstance(colours, bool):
        bad(request_id, f"tileset 'colours' must be 2 or 3, got {short(colours)}", '"colours": 2 (16 tiles)')
    if engine not in ENGINES:
        bad(request_id, f"tileset 'engine' must be one of {', '.join(ENGINES)}, got {short(engine)}",
             '"engine": "auto"')
    size, padding = (_whole(fields.get(k, d)) for k, d in (("size", None), ("padding", DEFAULT_PADDING)))
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 4096
                             or size % 8):
        bad(request_id, f"tileset 'size' must be a multiple of 8 from 16 to 4096 (px) or null, got {short(size)}",
             "leave it out for half the texture's shorter side")
    if not isinstance(padding, int) or isinstance(padding, bool) or not 0 <= padding <= 512:
        bad(request_id, f"tileset 'padding' must be an integer from 0 to 512 (px), got {short(padding)}",
             f'"padding": {DEFAULT_PADDING}')
    seed, steps = _seed_and_steps(fields, "tileset", request_id)
    return out | _models(fields, request_id) | {"colours": colours, "size": size, "padding": padding,
                                                 "engine": engine, "seed": seed, "steps": steps,
                                                 "maps": _maps(fields, "tileset", request_id)}


def _check_tileset_layout(fields: dict, request_id) -> dict:
    from backend.errors import InputError
    from backend.tileset.layout import check_seed
    from backend.tileset.make import parse_cells

    only(fields, TILESET_LAYOUT_FIELDS, "tileset_layout", request_id)
    out = {"input": _check_path(fields, "input", request_id),
           "output_dir": _check_path(fields, "output_dir", request_id)}
    try:
        out["cells"] = parse_cells(fields.get("cells"))
        out["seed"] = check_seed(_whole(fields.get("seed", 0)))
    except InputError as e:
        bad(request_id, f"tileset_layout: {e.message}", 'e.g. "cells": "8x8", "seed": 0')
    return out


def _renamed(kind: str, check):
    """A check that shares generate's checks, its messages naming the request that was sent."""
    def checked(fields: dict, request_id) -> dict:
        try:
            return check(fields, request_id)
        except ProtocolError as e:
            if e.message.startswith("generate"):
                e.message = kind + e.message.removeprefix("generate")
            raise
    return checked


def _check_restyle(fields: dict, request_id) -> dict:
    only(fields, RESTYLE_FIELDS, "restyle", request_id)
    prompt = fields.get("restyle_prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        bad(request_id, f"restyle needs 'restyle_prompt': the new look as text, got {short(prompt)}",
             'e.g. "restyle_prompt": "mossy bricks"')
    extra = fields.get("extra", {})
    if isinstance(extra, dict) and set(extra) & set(RESTYLE_OPTIONS):
        bad(request_id, f"restyle 'extra' repeats {sorted(set(extra) & set(RESTYLE_OPTIONS))}",
             "give the restyle options at the top level of the request")
    options = {name: fields[name] for name in RESTYLE_OPTIONS if name in fields}
    generate = {k: v for k, v in fields.items() if k not in RESTYLE_OPTIONS}
    generate |= {"engine": "diffusion", "appearance": "none",
                 "extra": {**extra, **options} if isinstance(extra, dict) else extra}
    try:
        if fields.get("mask") is not None:
            _check_path(fields, "mask", request_id)
        return _check_generate(generate, request_id)
    except ProtocolError as e:  # the checks are generate's: name the request that was sent
        if e.message.startswith("generate"):
            e.message = "restyle" + e.message.removeprefix("generate")
        raise


def parse_generate(fields: dict, request_id) -> dict:
    """The checked fields of a generate request (input and output_dir absolute), as the service takes
    them; raises ProtocolError. Shared with `python -m backend batch`, whose manifest lines are these."""
    return _check_generate(fields, request_id)


JOB_CHECKS = {
    "generate": _check_generate,
    "restyle": _check_restyle,
    "upscale": _check_upscale,
    "make_tileable": _renamed("make_tileable", _check_make_tileable),
    "tileset": _renamed("tileset", _check_tileset),
    "tileset_layout": _renamed("tileset_layout", _check_tileset_layout),
}
