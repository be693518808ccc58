"""Production size: peak memory and time per megapixel of one variant at 512² ... 8192².

    .venv/bin/python -m scripts.benchmarks.production_size [--engine patch|diffusion] [--sizes 512,2048]
        [--appearance none|kv] [--repo PATH] [--window PX] [--steps N] [--label after] [--store] [--note TEXT]
    .venv/bin/python -m scripts.benchmarks.production_size --window-pass [--store]

Each size runs in a fresh interpreter (PYTHONPATH = --repo, default this checkout, so another
checkout gives the "before" numbers), which reports its own wall time for the generate call and
its peak resident memory (ru_maxrss: the whole process, Python and torch included). The
diffusion engine's imports and model loading are timed apart (load_s: a 64 px call first, in the
same interpreter), so its seconds are the call's own work. The
diffusion engine runs on the tiny random-weight models (.test-models), so its numbers show how
memory and time scale with the side, not what SD1.5 costs; with --appearance kv it also reports the
most bytes the reference's kv recordings held at once (kept for the cache, or streamed window by
window: backend/diffusion/streamed.py). Prints one JSON line per size; with --store adds the rows
(labelled --label, e.g. before / after) to docs/benchmarks.json and rewrites docs/BENCHMARKS.md
("Production size").

--window-pass times one classifier-free-guided UNet pass of one 512 px window with the full-size
random-weight SD1.5 UNet (.test-models/full, written by make-test-models --full), the unit of the
windowed path's cost, and projects the seconds per megapixel of a 4096 px variant from it (windows x
steps x that pass; the VAE, the reference work and the load are left out: a projection, not a
measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, sys, time
import numpy as np
import skimage.data
from PIL import Image
from backend import generate_variants
engine, side, window, steps, base, ip, appearance = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                                     sys.argv[5], sys.argv[6], sys.argv[7])
gray = Image.fromarray(skimage.data.gravel()).resize((512, 512), Image.Resampling.LANCZOS)
rgb = np.asarray(gray, np.float32)[..., None] * np.array([0.9, 0.7, 0.5]) + 20
reference = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
kw = dict(engine=engine, size=side, seed=1, variants=1)
if engine == "diffusion":
    from backend.params import DiffusionOptions, specs
    kw |= dict(base=base, ip_adapter=ip, steps=steps, appearance=appearance)
    if "window" in specs(DiffusionOptions):  # a checkout from before windowed diffusion has no window
        kw["window"] = window
load = 0.0
if engine == "diffusion":  # imports and model loading, timed apart: a 64 px call first
    start = time.perf_counter()
    generate_variants(reference, **(kw | dict(size=64)))
    load = time.perf_counter() - start
    from backend.diffusion import engine as diffusion
    diffusion.reference_cache.clear()
start = time.perf_counter()
(image,) = generate_variants(reference, **kw)
seconds = time.perf_counter() - start
assert image.size == (side, side)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
row = {"engine": engine, "side": side, "seconds": round(seconds, 2), **({"load_s": round(load, 1)} if load else {}),
       "seconds_per_mpx": round(seconds / (side * side / 1e6), 3), "peak_mb": round(peak)}
if engine == "diffusion" and appearance != "none":
    from backend.diffusion.reference_cache import nbytes
    kept = sum(nbytes(work.recorded) for work in diffusion.reference_cache._entries.values())
    try:
        from backend.diffusion.streamed import peak as streamed
        kept = max(kept, streamed["recorded_bytes"])
    except ImportError:  # a checkout without streaming keeps every recording
        pass
    row |= {"appearance": appearance, "recorded_mb": round(kept / 2**20, 1)}
print(json.dumps(row))
"""

WINDOW_PASS = r"""
import json, sys, time
import torch
from diffusers import UNet2DConditionModel
unet = UNet2DConditionModel.from_pretrained(sys.argv[1]).eval()
latents, text = torch.randn(2, 4, 64, 64), torch.randn(2, 77, unet.config.cross_attention_dim)
times = []
with torch.no_grad():
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        unet(latents, 500, encoder_hidden_states=text)
        times.append(time.perf_counter() - start)
print(json.dumps({"window_pass_s": round(min(times), 2), "passes": times}))
"""


def _env(repo: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))


def run(engine: str, side: int, repo: Path, window: int, steps: int, models: dict, appearance: str = "none") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, engine, str(side), str(window), str(steps),
                          str(models.get("base", "")), str(models.get("ip_adapter", "")), appearance],
                         cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"engine": engine, "side": side, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("patch", "diffusion"), default="patch")
    p.add_argument("--sizes", default="512,2048,4096,8192")
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout to measure (default this one)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--appearance", choices=("none", "kv"), default="none",
                   help="diffusion: none, or kv (adds the reference work and its recordings)")
    p.add_argument("--window-pass", action="store_true",
                   help="time one full-size SD1.5 UNet window pass and project 4096 px from it")
    p.add_argument("--label", default="after", help="the checkout's name in the table (default after)")
    p.add_argument("--store", action="store_true", help="add the rows to docs/benchmarks.json and BENCHMARKS.md")
    p.add_argument("--note", default="", help="what the table should say about the machine and its load")
    p.add_argument("--rows", type=Path, help="store these JSON lines (an earlier run's output) instead of measuring")
    args = p.parse_args(argv)
    if args.rows is not None:
        return store([json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()], args)
    if args.window_pass:
        return window_pass(args)
    models: dict = {}
    if args.engine == "diffusion":  # the tiny models the tests wrote (scripts/test writes them)
        folder = max((ROOT / ".test-models").glob("tiny-*/.complete"), key=lambda p: p.stat().st_mtime).parent
        models = {"base": folder / "sd15", "ip_adapter": folder / "ip-adapter"}
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        rows.append(run(args.engine, side, args.repo, args.window, args.steps, models, args.appearance))
        print(json.dumps(rows[-1]), flush=True)
    return store(rows, args) if args.store else 0


def window_pass(args, repeats: int = 2) -> int:
    """One full-size UNet window pass (batch 2: classifier-free guidance) and the 4096 px projection."""
    from backend.diffusion.windows import Layout
    from backend.params import GenerationParams

    unet = ROOT / ".test-models" / "full" / "sd15" / "unet"
    out = subprocess.run([sys.executable, "-c", WINDOW_PASS, str(unet), str(repeats)], cwd=ROOT, env=_env(ROOT),
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    steps, side = GenerationParams.steps, 4096
    windows = len(Layout.for_size((side, side), 512, "both"))
    projected = measured["window_pass_s"] * windows * steps
    row = {"window_pass_s": measured["window_pass_s"], "projection": {
        "side": side, "windows": windows, "steps": steps, "seconds": round(projected),
        "seconds_per_mpx": round(projected / (side * side / 1e6), 1)}}
    print(json.dumps(row))
    if args.store:
        import datetime

        from scripts.benchmarks.report import load_results, render, write_atomic

        path = ROOT / "docs" / "benchmarks.json"
        results = load_results(path)
        results.setdefault("production_size", {"rows": []})["window_pass"] = row | {
            "date": datetime.date.today().isoformat(), "note": args.note}
        write_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
        write_atomic(ROOT / "docs" / "BENCHMARKS.md", render(results))
    return 0


def store(rows: list[dict], args) -> int:
    """Add `rows` (labelled args.label, replacing earlier rows of the same engine, side and label) to
    docs/benchmarks.json and rewrite docs/BENCHMARKS.md."""
    import datetime

    from scripts.benchmarks.report import load_results, render, write_atomic

    path = ROOT / "docs" / "benchmarks.json"
    results = load_results(path)
    entry = results.setdefault("production_size", {"rows": []})
    new = [row | {"checkout": args.label} for row in rows]

    def key(r):
        return r["engine"], r["side"], r["checkout"], r.get("appearance", "none")

    keys = {key(r) for r in new}
    entry["rows"] = [r for r in entry["rows"] if key(r) not in keys] + new
    entry |= {"command": "python -m scripts.benchmarks.production_size --engine patch|diffusion --sizes ... "
              "[--appearance none|kv] [--repo CHECKOUT --label before] --store", "date": datetime.date.today().isoformat(),
              "note": args.note or entry.get("note", "")}
    write_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_atomic(ROOT / "docs" / "BENCHMARKS.md", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
