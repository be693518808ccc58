"""The command line of `scripts/bench`: pick the mode, measure its sections, store the results."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from scripts.benchmarks import common
from scripts.benchmarks.common import DOCS, FULL_MODELS, Setup, full_size_models, load_average, machine
from scripts.benchmarks.gpu import GpuOptions, bench_gpu
from scripts.benchmarks.patch import bench_patch
from scripts.benchmarks.report import load_results, render, render_gpu, write_atomic
from scripts.benchmarks.service import bench_service
from scripts.benchmarks.speed import bench_speed
from scripts.benchmarks.variant_cost import bench_variant_cost, control_costs, ratio_lines

SECTIONS = ("variant_cost", "service", "patch", "speed")


def run(setup: Setup, models: dict, *, out_dir: Path = DOCS, command: str = "", sections=SECTIONS,
        log=print) -> dict:
    """Measure the CPU sections of `setup` and store them (json + markdown) in `out_dir`. A run of some
    sections only keeps the mode's stored results of the others."""
    started, wall0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    date = started.strftime("%Y-%m-%d %H:%M UTC")
    if set(sections) != set(SECTIONS):
        entry = dict(load_results(out_dir / "benchmarks.json").get(setup.mode) or {})
        if "speed" in sections and setup.speed:
            entry["speed"] = {**bench_speed(models, setup, log=log), "command": command, "date": date,
                              "machine": machine()}
            entry.setdefault("ratios", {}).update(entry["speed"]["ratios"])
        store(out_dir, setup.mode, entry)
        return entry
    entry = {"mode": setup.mode, "command": command, "date": date,
             "why": setup.why, "setup": asdict(setup), "machine": machine(), "load_average": {"start": load_average()}}
    if "variant_cost" in sections:
        entry["variant_cost"] = bench_variant_cost(models, setup, log=log)
        entry["variant_cost_ratio_n"] = max(setup.variants)
        entry["ratios"] = ratio_lines(entry["variant_cost"], entry["variant_cost_ratio_n"])
        entry["control_costs"] = control_costs(entry["variant_cost"], entry["variant_cost_ratio_n"])
        entry["variant_cost_ratio"] = entry["ratios"]["variant_cost_ratio"]
    if "service" in sections and setup.service_reps:
        try:  # a service that cannot start or dies must not cost the numbers measured so far
            entry["service"] = bench_service(models, setup, log=log)
        except (OSError, RuntimeError, ValueError) as e:
            log(f"[bench] service overhead not measured: {e}")
            entry["service"] = {"error": f"{type(e).__name__}: {e}"}
    if "patch" in sections and setup.patch_reps:
        entry["patch"] = bench_patch(setup, log=log)
    if "speed" in sections and setup.speed:
        entry["speed"] = bench_speed(models, setup, log=log)
        entry["ratios"].update(entry["speed"]["ratios"])
    entry["load_average"]["end"] = load_average()
    entry["wall_s"] = round(time.perf_counter() - wall0, 1)
    store(out_dir, setup.mode, entry)
    return entry


def store(out_dir: Path, mode: str, entry: dict) -> None:
    path = out_dir / "benchmarks.json"
    results = load_results(path)
    results[mode] = entry
    write_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_atomic(out_dir / "BENCHMARKS.md", render(results))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure what a variant costs (plain IP-Adapter, naive dual branch, cached kv), the service "
        "overhead and the weight-free engine, side by side in one run (interleaved repetitions, medians), "
        "with diffusers' own StableDiffusionPipeline + IP-Adapter as the peer. Writes docs/BENCHMARKS.md and "
        "docs/benchmarks.json; the last lines printed are variant_cost_ratio=X (cached kv over plain), "
        "first_call_ratio=Y (first call on a texture over plain) and peer_ratio=Z (cached kv over diffusers' "
        "pipeline), 4 variants, each where its rows were measured. Creates the full-size random-weight models "
        "in .test-models/full on first use (about 5 GB).")
    parser.add_argument("--quick", action="store_true", help="the quick configuration (about 25 minutes on 2 idle cores)")
    parser.add_argument("--gpu", action="store_true", help="the GPU benchmark on CUDA (fp16, 512², 30 steps, N = 4) "
                        "instead of the CPU sections")
    parser.add_argument("--correspondence", action="store_true", help="only the map correspondence on shuffled "
                        "16-px blocks of three textures at 512² (seconds, exact-source share; no models needed)")
    parser.add_argument("--compile", action="store_true", help="with --gpu: also torch.compile the UNet")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: run its code on the CPU with a tiny "
                        f"configuration ({common.DRY_RUN.size}², {common.DRY_RUN.steps} steps, {common.DRY_RUN.reps} repetition, float32) "
                        "and print the table without storing it: a check that the script works, not a measurement")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default: the mode's)")
    parser.add_argument("--size", type=int, help="image size in px, a multiple of 64 (default: the mode's)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the mode's); the kv window stays the "
                        "recipe's last third of them")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS[3:],
                        help="measure only these sections (speed: fast_cost_ratio and preview_decode_ratio, in "
                        "--quick); the mode's other stored results are kept")
    parser.add_argument("--methods", nargs="+", choices=("plain", "naive", "first", "first_inversion", "cached", "ad",
                                                         "lgp", "diffusers", "first_before", "cached_before"),
                        help="the ways to measure (default: the mode's); the results are stored as a run of "
                        "their own, e.g. quick+naive. first_inversion: the first call with "
                        "reference_passes=\"inversion\"; lgp: cached kv with LGP sketch guidance. first_before / cached_before: the engine with its costs "
                        "before #12 put back (two padded copies per wrapped convolution, the image embedding "
                        "every call, the full reference replay), for a before/after in one run")
    parser.add_argument("--variants", type=int, nargs="+", metavar="N",
                        help="the variant counts to measure (default: the mode's; the ratio needs 4)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, here and in the service (default: "
                        "torch's, one per core; 1 is steadier on a machine that other work shares)")
    parser.add_argument("--models", type=Path, default=FULL_MODELS, help="folder of the full-size test models "
                        "(default .test-models/full; written when missing)")
    parser.add_argument("--out-dir", type=Path, default=DOCS, help="where BENCHMARKS.md and benchmarks.json go "
                        "(default docs/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.methods and not {"plain", "cached"} <= set(args.methods):
        parser.error("--methods needs plain and cached (the ratio is one over the other)")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the service process inherits it
        import torch

        torch.set_num_threads(args.threads)
    command = "scripts/bench" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    if args.correspondence:
        from scripts.benchmarks.correspondence import bench_correspondence

        entry = {"mode": "correspondence", "command": command, "machine": machine(),
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "correspondence": bench_correspondence(args.reps or 3)}
        store(args.out_dir, "correspondence", entry)
        print(f"wrote {args.out_dir / 'BENCHMARKS.md'} and {args.out_dir / 'benchmarks.json'}")
        for row in entry["correspondence"]["rows"]:
            print(f"correspondence_{row['texture']}_s={row['median_s']:.3f}")
        return 0
    if args.dry_run and not args.gpu:
        parser.error("--dry-run goes with --gpu")
    if args.gpu and not args.dry_run:
        import torch

        if not torch.cuda.is_available():  # before the models: no 5 GB written for a run that cannot happen
            print("error: --gpu needs a CUDA GPU and the CUDA build of torch (see docs/guide/development.md, 'CPU "
                  "and GPU torch'); the benchmarks keep saying 'not measured' for the GPU. `scripts/bench --gpu "
                  "--dry-run` runs its code on the CPU with a tiny configuration", file=sys.stderr)
            return 2
    models = full_size_models(args.models)
    if args.gpu:
        setup = common.GPU if args.reps is None else replace(common.GPU, reps=args.reps)
        device, dtype = ("cpu", "float32") if args.dry_run else ("cuda", "float16")
        if args.dry_run:
            setup = replace(setup, size=common.DRY_RUN.size, steps=common.DRY_RUN.steps, reps=common.DRY_RUN.reps)
        wall0 = time.perf_counter()
        entry = {"mode": "gpu", "command": command, "machine": machine(),
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "gpu": bench_gpu(models, setup, GpuOptions(compile=args.compile), device=device, dtype=dtype)}
        entry["wall_s"] = round(time.perf_counter() - wall0, 1)
        print("\n".join(render_gpu(entry)))
        if args.dry_run:
            print("dry run on the CPU: nothing stored; these are not GPU numbers")
        else:
            store(args.out_dir, "gpu", entry)
        rows = {r["method"]: r for r in entry["gpu"]["rows"]}
        ratios = {"variant_cost_ratio": rows["cached"]["ratio_to_plain"],
                  "first_call_ratio": rows["first"]["ratio_to_plain"],
                  "peer_ratio": round(rows["cached"]["median_s"] / rows["diffusers"]["median_s"], 3),
                  "fast_over_full": round(rows["fast"]["median_s"] / rows["cached"]["median_s"], 3)}
    else:
        setup = common.QUICK if args.quick else common.FULL
        changes = {k: v for k, v in (("reps", args.reps), ("size", args.size), ("steps", args.steps),
                                     ("variants", tuple(args.variants or ())),
                                     ("methods", tuple(args.methods or ()))) if v}
        if "methods" in changes:
            added = [m for m in changes["methods"] if m not in setup.methods]
            changes["mode"] = "+".join([setup.mode, *added]) if added else setup.mode
        if changes:
            setup = replace(setup, **changes, why=setup.why + " This run changed the mode's settings on the "
                            "command line: " + ", ".join(f"{k} {v}" for k, v in changes.items() if k != "mode")
                            + ".")
        sections = tuple(args.sections) if args.sections else SECTIONS
        entry = run(setup, models, out_dir=args.out_dir, command=command, sections=sections)
        ratios = dict(entry["ratios"])
        for name, value in (entry.get("control_costs") or {}).items():
            print(f"{name}={value:.3f}")
        if "peer_ratio_without_card" in ratios:  # printed before the headline ratios, which come last
            print(f"peer_ratio_without_card={ratios.pop('peer_ratio_without_card'):.3f}")
    if not args.dry_run:
        print(f"wrote {args.out_dir / 'BENCHMARKS.md'} and {args.out_dir / 'benchmarks.json'}")
    for name, value in ratios.items():
        print(f"{name}={value:.3f}")
    return 0
