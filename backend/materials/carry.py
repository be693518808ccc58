"""Maps for any base-colour variant, however it was made (`python -m backend carry-maps`).

The variant is matched back to the reference by the wrap-around correspondence
(correspondence.correspond), and each of the reference's maps is gathered through it: the map a
pixel gets is the reference map's value where the variant's patch came from. The reference and its
maps are read at the variant's scale: when their sizes differ, each is centre-cropped to the
variant's aspect ratio and resized to its size (maps.fit: the rules of given maps, normal maps
re-normalised). The maps are written into the output folder as `<variant stem>-<name>.png` (`.tif`
for 16-bit colour and float maps), atomically, with the correspondence's fidelity in their
parameters record; nothing is written when one of the names is taken.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from backend.errors import InputError
from backend.images import load_reference
from backend.materials import correspondence
from backend.materials.maps import MaterialMap, fit, gather_map, map_path, read_map, save_map


def carry_maps(variant: str | os.PathLike, reference: str | os.PathLike, maps: dict[str, str | os.PathLike],
               out_dir: str | os.PathLike, *, seed: int = 0) -> tuple[dict[str, Path], dict]:
    """({name: written path}, the parameters record): the reference's `maps` rearranged like `variant`."""
    if not maps:
        raise InputError("no map to carry", hint="give at least one --map NAME=PATH of the reference's maps")
    var, ref = load_reference(variant), load_reference(reference)
    width, height = var.size
    given = {}
    for name, path in maps.items():
        try:
            given[name] = fit(fit(read_map(path, name), *ref.size), width, height)
        except InputError as e:
            raise InputError(f"map {name!r}: {e.message}", hint=e.hint) from e
    base = fit(MaterialMap("base_color", np.asarray(ref.rgb), source=ref.source), width, height)
    variant_path = Path(out_dir) / f"{Path(variant).stem or 'variant'}.png"
    taken = [str(map_path(variant_path, m)) for m in given.values() if map_path(variant_path, m).exists()]
    if taken:
        raise InputError(f"{', '.join(taken)} already exist(s); nothing was written",
                         hint="choose another --out folder, or move those files away")
    start = time.perf_counter()
    found = correspondence.correspond(np.asarray(var.rgb), base.pixels, seed=seed)
    record = {"carried_to": str(variant), **ref.record(), "maps": {n: str(p) for n, p in maps.items()},
              "seed": seed, **found.fidelity(), "correspondence_seconds": round(time.perf_counter() - start, 3)}
    parameters = json.dumps(record, sort_keys=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    try:
        for name, m in given.items():
            written[name] = save_map(gather_map(m, found.coords), variant_path, parameters)
    except FileExistsError as e:
        _remove(written.values())
        raise InputError(f"{e} (it appeared while writing); nothing was kept",
                         hint="run again with another --out folder") from e
    except BaseException:
        _remove(written.values())
        raise
    return written, record


def _remove(paths) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
