"""What a restyle costs beside making variants (numbers quoted in docs/guide/restyle-and-sketch.md, "Restyle").

Usage: .venv/bin/python scripts/bench_restyle.py MODELS_DIR [--size 256] [--steps 30] [--reps 3]

MODELS_DIR is a `make-test-models` folder (tiny or --full-size). On scikit-image's brick texture,
one variant / one restyle per call, every case in its own empty reference cache (except "cached",
which reuses its own), the cases interleaved (round r starts at case r), medians of --reps runs:

- plain: appearance none (no reference work), the floor;
- variants: appearance kv, first call on the texture;
- restyle: keep-structure, no mask, first call on the texture;
- restyle-after-variants: the same restyle once variants of the texture were made (inversion cached);
- restyle-cached: the same restyle again (all reference work cached);
- edit-inside: restyle with a mask in edit-inside mode, first call (the reference branch runs to the end).

Printed per case: seconds, UNet passes and UNet images (a pass at batch 2 is 2 images), as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend import generate_variants, restyle  # noqa: E402
from scripts.benchmarks.common import load_average, texture  # noqa: E402
from scripts.benchmarks.variant_cost import private_reference_cache  # noqa: E402


class UNetCounter:
    def __init__(self, unet):
        self.passes = self.images = 0
        self.handle = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.passes += 1
        self.images += int(args[0].shape[0])


def cases(models: Path, size: int, steps: int, mask: Path) -> dict:
    ref = texture("brick", size)
    common = dict(base=str(models / "sd15"), ip_adapter=str(models / "ip-adapter"), size=size, steps=steps, seed=1)

    def variants():
        return generate_variants(ref, engine="diffusion", appearance="kv", **common)

    def restyled(**kw):
        return restyle(ref, "mossy bricks", **common, **kw)

    def fresh(*calls):
        def case():
            with private_reference_cache(keep=True):
                for call in calls[:-1]:
                    call()
                with counting() as counter:
                    calls[-1]()
            return counter
        return case

    return {
        "plain": fresh(lambda: generate_variants(ref, engine="diffusion", appearance="none", **common)),
        "variants": fresh(variants),
        "restyle": fresh(restyled),
        "restyle-after-variants": fresh(variants, restyled),
        "restyle-cached": fresh(restyled, restyled),
        "edit-inside": fresh(lambda: restyled(mask=mask, mask_mode="edit-inside")),
    }


class counting:
    """Counts the UNet passes of the loaded pipeline and times the block."""

    def __enter__(self):
        from backend.diffusion import models

        (spec,) = models.loaded_specs()
        self.counter = UNetCounter(models.load_pipeline(spec).unet)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.counter.handle.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    mask = Path("/tmp") / f"bench-restyle-mask-{args.size}.png"
    painted = np.zeros((args.size, args.size), np.uint8)
    painted[: args.size // 2] = 255
    Image.fromarray(painted).save(mask)
    generate_variants(texture("brick", 64), engine="diffusion", appearance="none", size=64, steps=1,
                      base=str(args.models / "sd15"), ip_adapter=str(args.models / "ip-adapter"))  # load once
    runs = cases(args.models, args.size, args.steps, mask)
    names, results = list(runs), {name: [] for name in runs}
    load = [load_average()]
    for r in range(args.reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(runs[name]())
    load.append(load_average())
    report = {name: {"seconds": round(statistics.median(c.seconds for c in done), 3),
                     "unet_passes": done[0].counter.passes, "unet_images": done[0].counter.images}
              for name, done in results.items()}
    print(json.dumps({"size": args.size, "steps": args.steps, "reps": args.reps, "load_average": load,
                      "cases": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
