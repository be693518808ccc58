"""Engine registry. An engine is a module with

    NAME: str
    def available(base, ip_adapter) -> tuple[bool, str]      # usable here, and why not
    def generate(reference: Reference, params: GenerationParams, *, base, ip_adapter,
                 latents, on_step, cancel) -> list[PIL.Image.Image]
    def scaled_reference(reference, params) -> np.ndarray      # the reference as the engine sees it
    def scale_map(m: MaterialMap, reference_size, params)       # a map put through the same scale/crop

An image may carry `info["source_coords"]`, (H, W, 2) int (y, x) into scaled_reference with
image == scaled_reference[coords]; the material maps are then gathered through it exactly, else
through a correspondence searched afterwards (backend/materials/variants.py).

`params` arrives validated (GenerationParams.build) with a concrete seed; variant i uses seed + i;
the engine reads its own typed options from `params.<NAME>` (DiffusionOptions, PatchOptions). `on_step(step, total,
preview)` may be None; `cancel` is a threading.Event or None and must stop within one step by
raising backend.errors.CancelledError.
"""

from __future__ import annotations

import importlib

ENGINE_MODULES = {
    "diffusion": "backend.diffusion.engine",
    "patch": "backend.patch.engine",
}


def get_engine(name: str):
    return importlib.import_module(ENGINE_MODULES[name])


def resolve(name: str, base=None, ip_adapter=None) -> tuple[str, str]:
    """Map "auto" to a concrete engine: diffusion when its models are here, else patch."""
    if name != "auto":
        return name, f"engine {name} (asked for)"
    ok, why = get_engine("diffusion").available(base, ip_adapter)
    if ok:
        return "diffusion", "engine auto -> diffusion (models found locally)"
    return "patch", f"engine auto -> patch ({why})"
