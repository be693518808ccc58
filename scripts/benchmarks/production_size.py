"""Production size: peak memory and time per megapixel of one variant at 512² ... 8192².

    .venv/bin/python -m scripts.benchmarks.production_size [--engine patch|diffusion] [--sizes 512,2048]
        [--repo PATH] [--window PX] [--steps N] [--label after] [--store] [--note TEXT]

Each size runs in a fresh interpreter (PYTHONPATH = --repo, default this checkout, so another
checkout gives the "before" numbers), which reports its own wall time for the generate call and
its peak resident memory (ru_maxrss: the whole process, Python and torch included). The
diffusion engine runs on the tiny random-weight models (.test-models), so its numbers show how
memory and time scale with the side, not what SD1.5 costs. Prints one JSON line per size; with
--store adds the rows (labelled --label, e.g. before / after) to docs/benchmarks.json and rewrites
docs/BENCHMARKS.md ("Production size").
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
engine, side, window, steps, base, ip = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
gray = Image.fromarray(skimage.data.gravel()).resize((512, 512), Image.Resampling.LANCZOS)
rgb = np.asarray(gray, np.float32)[..., None] * np.array([0.9, 0.7, 0.5]) + 20
reference = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
kw = dict(engine=engine, size=side, seed=1, variants=1)
if engine == "diffusion":
    from backend.params import DiffusionOptions, specs
    kw |= dict(base=base, ip_adapter=ip, steps=steps, appearance="none")
    if "window" in specs(DiffusionOptions):  # a checkout from before windowed diffusion has no window
        kw["window"] = window
start = time.perf_counter()
(image,) = generate_variants(reference, **kw)
seconds = time.perf_counter() - start
assert image.size == (side, side)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"engine": engine, "side": side, "seconds": round(seconds, 2),
                  "seconds_per_mpx": round(seconds / (side * side / 1e6), 3), "peak_mb": round(peak)}))
"""


def run(engine: str, side: int, repo: Path, window: int, steps: int, models: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-c", CHILD, engine, str(side), str(window), str(steps),
                          str(models.get("base", "")), str(models.get("ip_adapter", ""))],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
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
    p.add_argument("--label", default="after", help="the checkout's name in the table (default after)")
    p.add_argument("--store", action="store_true", help="add the rows to docs/benchmarks.json and BENCHMARKS.md")
    p.add_argument("--note", default="", help="what the table should say about the machine and its load")
    p.add_argument("--rows", type=Path, help="store these JSON lines (an earlier run's output) instead of measuring")
    args = p.parse_args(argv)
    if args.rows is not None:
        return store([json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()], args)
    models: dict = {}
    if args.engine == "diffusion":  # the tiny models the tests wrote (scripts/test writes them)
        folder = max((ROOT / ".test-models").glob("tiny-*/.complete"), key=lambda p: p.stat().st_mtime).parent
        models = {"base": folder / "sd15", "ip_adapter": folder / "ip-adapter"}
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        rows.append(run(args.engine, side, args.repo, args.window, args.steps, models))
        print(json.dumps(rows[-1]), flush=True)
    return store(rows, args) if args.store else 0


def store(rows: list[dict], args) -> int:
    """Add `rows` (labelled args.label, replacing earlier rows of the same engine, side and label) to
    docs/benchmarks.json and rewrite docs/BENCHMARKS.md."""
    import datetime

    from scripts.benchmarks.report import load_results, render, write_atomic

    path = ROOT / "docs" / "benchmarks.json"
    results = load_results(path)
    entry = results.setdefault("production_size", {"rows": []})
    new = [row | {"checkout": args.label} for row in rows]
    keys = {(r["engine"], r["side"], r["checkout"]) for r in new}
    entry["rows"] = [r for r in entry["rows"] if (r["engine"], r["side"], r["checkout"]) not in keys] + new
    entry |= {"command": "python -m scripts.benchmarks.production_size --engine patch|diffusion --sizes ... "
              "[--repo CHECKOUT --label before] --store", "date": datetime.date.today().isoformat(),
              "note": args.note or entry.get("note", "")}
    write_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_atomic(ROOT / "docs" / "BENCHMARKS.md", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
