"""The Python API: `generate_variants`, the one entry point shared by the CLI and the service."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable

from PIL import Image

from backend import engines
from backend.images import load_reference
from backend.params import GenerationParams

log = logging.getLogger(__name__)

OnStep = Callable[[int, int, "Image.Image | None"], None]


def generate_variants(
    reference: str | os.PathLike | Image.Image,
    *,
    base: str | None = None,
    ip_adapter: str | None = None,
    engine: str = "auto",
    variants: int = 1,
    seed: int | None = None,
    steps: int = 30,
    size: int = 512,
    tile: str = "both",
    balance: float = 0.5,
    appearance: str = "kv",
    ip_scale: float | None = None,
    prompt: str = "",
    negative_prompt: str = "",
    guidance_scale: float | None = None,
    ip_mode: str = "full",
    suppress_content: str = "",
    latents=None,
    on_step: OnStep | None = None,
    cancel: threading.Event | None = None,
    **extra,
) -> list[Image.Image]:
    """Make `variants` tileable variants of `reference`; see README "Python API".

    Returns one PIL image per variant. `image.info["parameters"]` holds its parameters as JSON,
    including its own seed (variant i of a call with seed s has seed s + i, so it can be
    reproduced alone) and the engine actually used. Raises backend.errors.InputError for bad
    input, ModelsMissingError when a model is absent, CancelledError when `cancel` is set.
    """
    params = GenerationParams(
        engine=engine, variants=variants, seed=seed, steps=steps, size=size, tile=tile,
        balance=balance, appearance=appearance, ip_scale=ip_scale, prompt=prompt,
        negative_prompt=negative_prompt, guidance_scale=guidance_scale, ip_mode=ip_mode,
        suppress_content=suppress_content, extra=dict(extra),
    ).validated()
    if params.seed is None:
        params = params.replace(seed=secrets.randbelow(2**31))
    ref = load_reference(reference)
    engine_name, why = engines.resolve(params.engine, base, ip_adapter)
    log.info(why)
    images = engines.get_engine(engine_name).generate(
        ref, params, base=base, ip_adapter=ip_adapter, latents=latents, on_step=on_step, cancel=cancel,
    )
    results = []
    for i, image in enumerate(images):
        if ref.grayscale and image.mode not in ("L", "LA"):  # LA: the patch engine carries alpha
            image = image.convert("L")
        record = params.to_dict() | {
            "engine": engine_name, "seed": params.seed + i, "variant": i, "batch_seed": params.seed,
            "reference": ref.source, "base": base, "ip_adapter": ip_adapter,
        }
        record.update(image.info.get("engine_parameters", {}))
        image.info.pop("engine_parameters", None)
        image.info["parameters"] = json.dumps(record, sort_keys=True)
        results.append(image)
    return results
