"""Benchmarks: what a variant costs, side by side with plain IP-Adapter and the naive dual branch.

`python -m backend.bench [--quick] [--gpu]` (what `scripts/bench` runs) measures, in one process:

1. variant cost: N = 1 and N = 4 variants of one texture, the same size and steps, made
   - `plain`:  plain IP-Adapter (`appearance="none"`);
   - `naive`:  kv replacement that recomputes the reference per variant, as the published dual-branch
               kv methods do: one call per variant, each with an empty reference cache that keeps
               nothing, so every variant pays for the VAE encoding, the DDIM inversion and the
               reference branch again;
   - `first`:  the product's kv replacement on a texture it has not seen (the reference work is done
               once, for all N variants of the call) -- full run only;
   - `cached`: the product's kv replacement with the texture's reference work already cached;
   and `ad` (attention distillation) once the engine has `appearance="ad"`;
2. service overhead: one job through `python -m backend serve` against the same call in-process,
   time to the first progress event and in total;
3. the weight-free engine: seconds per 512² variant and its metrics on four real textures;
4. `--gpu`: the product and plain diffusers IP-Adapter on a CUDA GPU, fp16, 512², 30 steps, N = 4.

Every comparison is measured side by side: the repetitions of its cases are interleaved (round
robin, with the order rotated every round) and medians are reported, because shared machines are
noisy. The sanity of each case is checked while it runs (how many inversions and reference branches
the engine actually did), so a benchmark cannot silently measure something else.

Results go to docs/benchmarks.json (raw numbers, one entry per mode: quick, full, gpu) and
docs/BENCHMARKS.md (rendered from all entries). The last line printed is `variant_cost_ratio=X`:
cached kv over plain, N = 4.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FULL_MODELS = ROOT / ".test-models" / "full"
TEXTURE = "gravel"  # the texture of the diffusion benchmarks (scikit-image, CC0)
PATCH_TEXTURES = ("brick", "grass", "gravel", "immunohistochemistry")  # the last one is colour
AD_APPEARANCE = "ad"  # measured as soon as backend.params.APPEARANCE_MODES has it (issue 7)
TARGET_RATIO = 1.25
TARGET_SERVICE_OVERHEAD = 0.05


@dataclass(frozen=True)
class Setup:
    """What one mode measures. Sizes in px; `reps` interleaved repetitions of every case."""

    mode: str
    size: int
    steps: int
    reps: int
    variants: tuple[int, ...] = (1, 4)
    methods: tuple[str, ...] = ("plain", "naive", "cached")
    service_reps: int = 3
    patch_size: int = 512
    patch_reps: int = 3
    seed: int = 1
    why: str = ""


# A first call with one variant does exactly the work of one naive variant: not measured twice.
SKIP = {("first", 1)}
PROJECT_STEPS = 30  # the product's default: UNet time is scaled to it for the "projected" columns

QUICK = Setup(
    mode="quick", size=128, steps=3, reps=3, variants=(4,), methods=("plain", "naive", "cached"),
    service_reps=0, patch_reps=1,
    why="full-size random-weight SD1.5 + ViT-H (the real layers) at 128², 3 steps, N = 4 only, the three "
        "ways of the comparison, no service section: 3 steps keep the recipe's window (the last third: 1 "
        "of 3 steps) and the rest keeps the run under 5 minutes on 2 idle CPU cores (`--methods plain naive "
        "first cached ad` adds the first call and AD: about 7 minutes). On this CPU a batch of 8 at 128² costs "
        "half as much per image as a batch of 1 (at 512² about the same per image), which makes the naive way (batches of "
        "1 and 2) look worse here than at 512². At 128² the costs that do not grow with the steps (CLIP "
        "image encoder, VAE) and batching weigh more than at 512² with 30 steps; the UNet-only and the "
        "30-step projected ratios show how much.",
)
FULL = Setup(
    mode="full", size=512, steps=3, reps=2, methods=("plain", "naive", "cached"), service_reps=2,
    why="full-size random-weight SD1.5 + ViT-H at 512², 3 steps (the kv window is the last step: the "
        "recipe's third). The cost per step is what matters: the UNet-only ratio and the ratio projected "
        "to 30 steps (the time outside the UNet plus 10 x the UNet time) are given beside the measured "
        "one. 2 interleaved repetitions (one round of every case takes about 13 minutes on 2 cores); "
        "AD and the first call are measured in the quick run (AD's backward passes would double this one).",
)
GPU = Setup(mode="gpu", size=512, steps=30, reps=3, variants=(4,), methods=("plain", "naive", "first", "cached"),
            service_reps=0, patch_reps=0)


# ---------------------------------------------------------------------------------------- timing


def median(values) -> float:
    return float(statistics.median(values))


def interleaved(cases: dict[str, Callable[[], object]], reps: int,
                on_time: Callable[[str, int, float], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each case per repetition; round r runs the cases rotated by r, one after another."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            cases[name]()
            seconds = time.perf_counter() - start
            times[name].append(seconds)
            if on_time is not None:
                on_time(name, r, seconds)
    return times


class PhaseClock:
    """Seconds spent in each model of the pipeline (forward hooks), and the UNet's images per pass.

    The phases are the UNet, the CLIP image encoder, the text encoder, the VAE encoder and decoder;
    whatever else a call costs (schedulers, attention bookkeeping, Python) is the call's time minus
    their sum. On a GPU the hooks synchronise, so the times are the kernels' own.
    """

    PARTS = ("unet", "image_encoder", "text_encoder", "vae_encoder", "vae_decoder")

    def __init__(self, pipe):
        import torch

        self._sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
        self.modules = {"unet": pipe.unet, "image_encoder": pipe.image_encoder, "text_encoder": pipe.text_encoder,
                        "vae_encoder": pipe.vae.encoder, "vae_decoder": pipe.vae.decoder}
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.unet_images = 0  # sum of the UNet's batch sizes: one image through the UNet once = 1
        self._started: dict[str, float] = {}
        self._handles = []

    def __enter__(self) -> PhaseClock:
        for name, module in self.modules.items():
            if module is None:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            # always_call: AD's loss passes end in an exception at the last distilled layer
            self._handles.append(module.register_forward_hook(self._post(name), always_call=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, name):
        def hook(module, args):
            self._sync()
            self._started[name] = time.perf_counter()
            if name == "unet":
                self.unet_images += int(args[0].shape[0])
        return hook

    def _post(self, name):
        def hook(module, args, output):
            self._sync()
            self.seconds[name] += time.perf_counter() - self._started.pop(name)
        return hook

    def take(self) -> dict:
        """The totals since the last take, then zero them."""
        out = {**{k: round(v, 4) for k, v in self.seconds.items()}, "unet_images": self.unet_images}
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.unet_images = 0
        return out


# --------------------------------------------------------------------------------------- machine


def machine() -> dict:
    """What the numbers were measured on."""
    import diffusers
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "diffusers": diffusers.__version__,
        "python": platform.python_version(), "os": platform.platform(terse=True), "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------- inputs


def full_size_models(folder: Path = FULL_MODELS, log=print) -> dict[str, Path]:
    """The full-size random-weight models, written on first use (about 5 GB, a few minutes)."""
    from backend.diffusion.test_models import make_test_models

    done = folder / ".complete"
    if not done.exists():
        log(f"[bench] writing full-size random-weight models to {folder} (about 5 GB, once)")
        make_test_models(folder, full_size=True)
        done.touch()
    return {"base": folder / "sd15", "ip_adapter": folder / "ip-adapter"}


def texture(name: str, size: int):
    """One of scikit-image's CC0 textures, centre square resized to `size`."""
    import skimage.data
    from PIL import Image

    from backend.images import center_square

    return center_square(Image.fromarray(getattr(skimage.data, name)()), size)


# ------------------------------------------------------------------------------ variant cost


@contextlib.contextmanager
def private_reference_cache(keep: bool):
    """Run with an empty reference cache of the diffusion engine, then put the real one back.

    keep=False: the private cache keeps nothing, so every call redoes the reference work (the naive
    dual branch); keep=True: an ordinary, empty cache (the first call on a new texture).
    """
    from backend.diffusion import engine as diffusion
    from backend.diffusion.reference_cache import ReferenceCache

    saved = diffusion.reference_cache
    diffusion.reference_cache = ReferenceCache(None if keep else 0)
    try:
        yield diffusion.reference_cache
    finally:
        diffusion.reference_cache = saved


def reference_work_done() -> tuple[int, int]:
    from backend.diffusion import engine as diffusion

    return diffusion.counters["inversions"], diffusion.counters["reference_branches"]


def _expect_reference_work(method: str, before: tuple[int, int], expected: int) -> None:
    after = reference_work_done()
    done = (after[0] - before[0], after[1] - before[1])
    if done != (expected, expected):
        raise RuntimeError(f"benchmark case {method!r} did {done[0]} inversion(s) and {done[1]} reference "
                           f"branch(es), expected {expected} of each: it would not measure what it claims")


def variant_methods(generate: Callable[..., list], setup: Setup) -> dict[str, Callable[[int], list]]:
    """The ways of making n variants, each a function of n; `generate(variants=, seed=, appearance=)`."""
    from backend.params import APPEARANCE_MODES

    seed = setup.seed

    def plain(n):
        before = reference_work_done()
        images = generate(variants=n, seed=seed, appearance="none")
        _expect_reference_work("plain", before, 0)
        return images

    def naive(n):
        before = reference_work_done()
        images = []
        with private_reference_cache(keep=False):
            for i in range(n):
                images += generate(variants=1, seed=seed + i, appearance="kv")
        _expect_reference_work("naive", before, n)
        return images

    def first(n):
        before = reference_work_done()
        with private_reference_cache(keep=True):
            images = generate(variants=n, seed=seed, appearance="kv")
        _expect_reference_work("first", before, 1)
        return images

    def cached(n):
        before = reference_work_done()
        images = generate(variants=n, seed=seed, appearance="kv")
        _expect_reference_work("cached", before, 0)
        return images

    def ad(n):
        before = reference_work_done()
        images = generate(variants=n, seed=seed, appearance=AD_APPEARANCE)
        _expect_reference_work("ad", before, 0)
        return images

    methods = {"plain": plain, "naive": naive, "first": first, "cached": cached}
    if AD_APPEARANCE in APPEARANCE_MODES:
        methods["ad"] = ad
    return methods


def bench_variant_cost(models: dict, setup: Setup, *, device: str | None = None, dtype: str | None = None,
                       log=print) -> dict:
    """Section 1 (and 2, AD): every method and N interleaved; seconds, phases and ratios to plain."""
    from backend import generate_variants
    from backend.diffusion import models as model_loading
    from backend.params import APPEARANCE_MODES

    reference = texture(TEXTURE, setup.size)
    extra = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}

    def generate(**kw):
        return generate_variants(reference, base=str(models["base"]), ip_adapter=str(models["ip_adapter"]),
                                 engine="diffusion", size=setup.size, steps=setup.steps, **extra, **kw)

    methods = variant_methods(generate, setup)
    chosen = [m for m in setup.methods if m in methods]
    t0 = time.perf_counter()
    generate(variants=1, seed=setup.seed, appearance="none")  # loads the pipeline, warms allocators
    load_s = time.perf_counter() - t0
    generate(variants=1, seed=setup.seed, appearance="kv")  # does the reference work: "cached" finds it
    for n in sorted(set(setup.variants) - {1}):  # the first pass at a new batch size sets up its kernels
        generate(variants=n, seed=setup.seed, appearance="none")
    spec = model_loading.loaded_specs()[0]
    pipe = model_loading.load_pipeline(spec)

    cases, keys = {}, {}
    for n in setup.variants:
        for method in chosen:
            if (method, n) in SKIP:
                continue
            name = f"{method}/N={n}"
            cases[name] = (lambda m=methods[method], n=n: m(n))
            keys[name] = (method, n)
    phases: dict[str, list[dict]] = {name: [] for name in cases}
    with PhaseClock(pipe) as clock:
        def record(name, rep, seconds):
            phases[name].append(clock.take())
            log(f"[bench] {name:<14} rep {rep + 1}/{setup.reps}: {seconds:7.2f} s")

        clock.take()
        times = interleaved({name: case for name, case in cases.items()}, setup.reps, record)

    rows = []
    for name, (method, n) in keys.items():
        unet = [p["unet"] for p in phases[name]]
        row = {"method": method, "variants": n, "seconds": [round(t, 3) for t in times[name]],
               "median_s": round(median(times[name]), 3), "per_variant_s": round(median(times[name]) / n, 3),
               "unet_median_s": round(median(unet), 3), "unet_images": phases[name][0]["unet_images"],
               "projected_s": round(median(t - u + u * PROJECT_STEPS / setup.steps for t, u in zip(
                   times[name], unet, strict=True)), 3),
               "phases_median_s": {part: round(median(p[part] for p in phases[name]), 3) for part in PhaseClock.PARTS}}
        rows.append(row)
    for row in rows:
        plain = next(r for r in rows if r["method"] == "plain" and r["variants"] == row["variants"])
        row["ratio_to_plain"] = round(row["median_s"] / plain["median_s"], 3)
        row["unet_ratio_to_plain"] = round(row["unet_median_s"] / plain["unet_median_s"], 3)
        row["projected_ratio_to_plain"] = round(row["projected_s"] / plain["projected_s"], 3)
        pairs = [a / b for a, b in zip(times[f"{row['method']}/N={row['variants']}"],
                                       times[f"plain/N={row['variants']}"], strict=True)]
        row["paired_ratio_median"] = round(median(pairs), 3)
    return {
        "texture": TEXTURE, "size": setup.size, "steps": setup.steps, "reps": setup.reps,
        "window_steps": _window_steps(setup.steps), "guidance_scale": _default_guidance(),
        "device": spec.device, "dtype": spec.dtype, "first_call_incl_load_s": round(load_s, 2),
        "ad": ad_status(setup, APPEARANCE_MODES),
        "rows": rows,
    }


def ad_status(setup: Setup, modes) -> str:
    if AD_APPEARANCE not in modes:
        return "not measured: AD mode not implemented yet"
    if AD_APPEARANCE not in setup.methods:
        return "not measured in this mode: `--methods plain naive first cached ad` measures it (run quick+first+ad)"
    from backend.diffusion import attention_distillation

    return (f"measured: {attention_distillation.DEFAULT_ITERATIONS} Adam iterations (lr "
            f"{attention_distillation.DEFAULT_LR}) per window step, the engine's defaults")


def _window_steps(steps: int) -> int:
    from backend.diffusion import balance

    return len(balance.settings().window_steps(steps))


def _default_guidance() -> float:
    from backend.diffusion import engine as diffusion

    return diffusion.DEFAULT_GUIDANCE


def headline_ratio(variant_cost: dict, n: int = 4) -> float:
    """Cached kv over plain, N = n: the number the issue's target is about."""
    row = next(r for r in variant_cost["rows"] if r["method"] == "cached" and r["variants"] == n)
    return row["ratio_to_plain"]


# ------------------------------------------------------------------------------ service overhead


class ServiceRun:
    """`python -m backend serve` over its pipes; events are stamped with perf_counter on arrival."""

    def __init__(self, models: dict, folder: Path, device: str | None = None):
        env = dict(os.environ, TEXTURE_VARIANTS_LOG_DIR=str(folder / "logs"), PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "backend", "serve", "--base", str(models["base"]),
                "--ip-adapter", str(models["ip_adapter"])]
        if device:
            args += ["--device", device]
        self._stderr = open(folder / "service-stderr.txt", "wb")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        self._n = 0

    def send(self, type: str, **fields) -> tuple[str, float]:
        self._n += 1
        request_id = f"bench-{self._n}"
        sent = time.perf_counter()
        self.popen.stdin.write((json.dumps({"id": request_id, "type": type, **fields}) + "\n").encode())
        self.popen.stdin.flush()
        return request_id, sent

    def until(self, request_id: str, final: tuple[str, ...]) -> list[tuple[float, dict]]:
        """(arrival time, event) of `request_id` up to and including the first of type in `final`."""
        seen = []
        for line in self.popen.stdout:
            now = time.perf_counter()
            event = json.loads(line)
            if event.get("id") != request_id:
                continue
            seen.append((now, event))
            if event["type"] in final:
                return seen
        raise RuntimeError(f"the service ended before answering {request_id}; see {self._stderr.name}")

    def job(self, **fields) -> dict:
        request_id, sent = self.send("generate", **fields)
        events = self.until(request_id, ("result", "error", "cancelled"))
        last_t, last = events[-1]
        if last["type"] != "result":
            raise RuntimeError(f"service job failed: {last}")
        progress = [t for t, e in events if e["type"] == "progress"]
        return {"first_progress_s": progress[0] - sent if progress else None, "total_s": last_t - sent,
                "job_elapsed_s": last.get("elapsed")}

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            request_id, _ = self.send("shutdown")
            self.until(request_id, ("ack",))
        with contextlib.suppress(OSError, ValueError):
            self.popen.stdin.close()
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._stderr.close()


def bench_service(models: dict, setup: Setup, *, device: str | None = None, log=print) -> dict:
    """Section 3: one variant (kv, texture cached) through the service vs the same call in-process.

    Both sides are warm (models loaded, reference work cached) before the interleaved repetitions,
    so the difference is what the service adds: JSON lines, the worker thread, the job folder, the
    variant PNG written into it and the live previews.
    """
    from backend import generate_variants

    params = dict(engine="diffusion", variants=1, seed=setup.seed, steps=setup.steps, size=setup.size)
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp:
        tmp = Path(tmp)
        reference_path = tmp / f"{TEXTURE}.png"
        texture(TEXTURE, setup.size).save(reference_path)
        service = ServiceRun(models, tmp, device)
        try:
            hello_id, _ = service.send("hello", protocol=2, client="bench")
            service.until(hello_id, ("hello", "error"))
            job = dict(input=str(reference_path), output_dir=str(tmp / "out"), **params)
            t0 = time.perf_counter()
            service.job(**job)  # loads the models in the service and caches the reference work
            service_load_s = time.perf_counter() - t0

            def in_process() -> dict:
                first = []
                start = time.perf_counter()
                generate_variants(reference_path, base=str(models["base"]), ip_adapter=str(models["ip_adapter"]),
                                  on_step=lambda *a: first or first.append(time.perf_counter()),
                                  **({"device": device} if device else {}), **params)
                return {"first_progress_s": first[0] - start, "total_s": time.perf_counter() - start}

            in_process()  # warm in this process too
            results: dict[str, list[dict]] = {"service": [], "in_process": []}
            cases = {"service": lambda: results["service"].append(service.job(**job)),
                     "in_process": lambda: results["in_process"].append(in_process())}

            def progress(name, rep, seconds):
                log(f"[bench] service overhead, {name:<10} rep {rep + 1}/{setup.service_reps}: {seconds:7.2f} s")

            interleaved(cases, setup.service_reps, progress)
        finally:
            service.close()

    def med(side, key):
        return round(median(r[key] for r in results[side]), 3)

    out = {"size": setup.size, "steps": setup.steps, "variants": 1, "reps": setup.service_reps,
           "service_first_job_incl_load_s": round(service_load_s, 2), "raw": results}
    for key in ("first_progress_s", "total_s"):
        out[key] = {"service": med("service", key), "in_process": med("in_process", key)}
        out[key]["overhead"] = round(out[key]["service"] / out[key]["in_process"] - 1, 4)
    out["job_elapsed_s"] = med("service", "job_elapsed_s")
    return out


# ---------------------------------------------------------------------------- weight-free engine


def bench_patch(setup: Setup, log=print) -> dict:
    """Section 4: the patch engine at `patch_size`², textures interleaved, seconds and metrics."""
    from backend import generate_variants
    from backend.metrics import texture_metrics

    references = {name: texture(name, setup.patch_size) for name in PATCH_TEXTURES}
    metrics: dict[str, list[dict]] = {name: [] for name in PATCH_TEXTURES}
    seeds = {name: iter(range(setup.seed, setup.seed + setup.patch_reps)) for name in PATCH_TEXTURES}
    images = {}

    def case(name):
        (images[name],) = generate_variants(references[name], engine="patch", size=setup.patch_size,
                                            seed=next(seeds[name]))

    def measure(name, rep, seconds):  # metrics outside the timed call
        reference = references[name]
        exemplar = reference.convert("L") if images[name].mode == "L" else reference
        metrics[name].append(texture_metrics(images[name], exemplar))
        log(f"[bench] patch {name:<22} rep {rep + 1}/{setup.patch_reps}: {seconds:6.2f} s")

    times = interleaved({name: (lambda n=name: case(n)) for name in PATCH_TEXTURES}, setup.patch_reps, measure)
    rows = []
    for name in PATCH_TEXTURES:
        m = metrics[name]
        rows.append({"texture": name, "mode": references[name].mode, "seconds": [round(t, 3) for t in times[name]],
                     "median_s": round(median(times[name]), 3),
                     "seam_max": round(max(max(x["seam_x"], x["seam_y"]) for x in m), 3),
                     "appearance_median": round(median(x["appearance"] for x in m), 3),
                     "appearance_max": round(max(x["appearance"] for x in m), 3),
                     "copy_max": round(max(x["copy"] for x in m), 3)})
    return {"size": setup.patch_size, "reps": setup.patch_reps, "rows": rows}


# ------------------------------------------------------------------------------------------- GPU


@dataclass
class GpuOptions:
    channels_last: bool = True
    compile: bool = False  # torch.compile of the UNet (the first calls compile: warm-up runs them)


def bench_gpu(models: dict, setup: Setup = GPU, options: GpuOptions | None = None, *, device: str = "cuda",
              dtype: str = "float16", log=print) -> dict:
    """Section 5: the product (kv cached, first call, naive) against plain IP-Adapter, in the engine
    and through diffusers' own pipeline call, N variants at once; seconds per variant and peak memory.

    The engine's attention runs through PyTorch SDPA (diffusers' AttnProcessor2_0 and the kv
    processor both call F.scaled_dot_product_attention). `device` is a parameter so that the code
    path can be exercised on a CPU with the tiny models.
    """
    import torch

    from backend import generate_variants
    from backend.diffusion import models as model_loading

    options = options or GpuOptions()
    n = setup.variants[-1]
    reference = texture(TEXTURE, setup.size)
    base, ip = str(models["base"]), str(models["ip_adapter"])
    cuda = device.startswith("cuda")

    def generate(**kw):
        return generate_variants(reference, base=base, ip_adapter=ip, engine="diffusion", size=setup.size,
                                 steps=setup.steps, device=device, dtype=dtype, **kw)

    generate(variants=1, seed=setup.seed, appearance="kv")  # loads, primes the cache
    spec = model_loading.loaded_specs()[0]
    pipe = model_loading.load_pipeline(spec)
    applied = []
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if options.compile:
        pipe.unet.compile()
        applied.append("torch.compile(unet)")
    attention = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})

    def diffusers_plain():
        generator = torch.Generator("cpu").manual_seed(setup.seed)
        return pipe(prompt="", ip_adapter_image=reference.convert("RGB"), num_inference_steps=setup.steps, height=setup.size,
                    width=setup.size, num_images_per_prompt=n, generator=generator).images

    methods = variant_methods(generate, setup)
    cases = {name: (lambda m=methods[name]: m(n)) for name in setup.methods if name in methods}
    cases["diffusers_plain"] = diffusers_plain
    peaks: dict[str, list[float]] = {name: [] for name in cases}

    def peaked(name, fn):
        def run():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            fn()
            if cuda:
                torch.cuda.synchronize()
                peaks[name].append(torch.cuda.max_memory_allocated() / 2**30)
        return run

    for fn in cases.values():  # warm-up (and compilation) outside the timings
        fn()
    times = interleaved({name: peaked(name, fn) for name, fn in cases.items()}, setup.reps,
                        lambda name, rep, s: log(f"[bench] gpu {name:<16} rep {rep + 1}/{setup.reps}: {s:7.2f} s"))
    plain = median(times["plain"])
    rows = [{"method": name, "variants": n, "seconds": [round(t, 3) for t in times[name]],
             "median_s": round(median(times[name]), 3), "per_variant_s": round(median(times[name]) / n, 3),
             "ratio_to_plain": round(median(times[name]) / plain, 3),
             "peak_gb": round(max(peaks[name]), 2) if peaks[name] else None} for name in cases]
    return {"size": setup.size, "steps": setup.steps, "variants": n, "reps": setup.reps, "device": spec.device,
            "dtype": spec.dtype, "optimisations": applied, "attention_processors": attention, "rows": rows,
            "weights_peak_note": "peak = torch.cuda.max_memory_allocated during the call (weights included)"}


# ---------------------------------------------------------------------------------------- report


def load_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value, digits=2, suffix="") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _machine_line(entry: dict) -> str:
    m = entry["machine"]
    load = entry.get("load_average") or {}
    text = (f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gb']} GB RAM, "
            f"torch {m['torch']}, diffusers {m['diffusers']}, Python {m['python']}")
    if m.get("gpu"):
        text += f", GPU {m['gpu']} ({m.get('gpu_memory_gb')} GB)"
    if load:
        text += f"; load average (1 min) {load.get('start', ['?'])[0]} at start, {load.get('end', ['?'])[0]} at end"
    return text


METHOD_TEXT = {
    "plain": "plain IP-Adapter (`appearance=\"none\"`)",
    "naive": "kv, reference recomputed per variant (naive dual branch)",
    "first": "kv, first call on the texture (reference work once per call)",
    "cached": "**kv, reference work cached (the product)**",
    "ad": "attention distillation (AD), reference work cached",
    "diffusers_plain": "plain diffusers `StableDiffusionPipeline` + IP-Adapter",
}


def render_variant_cost(entry: dict) -> list[str]:
    vc = entry["variant_cost"]
    lines = [f"Texture `{vc['texture']}`, {vc['size']}², {vc['steps']} steps (kv window: the last "
             f"{vc['window_steps']}), guidance {vc['guidance_scale']}, {vc['device']} {vc['dtype']}, "
             f"{vc['reps']} interleaved repetitions, medians.", "",
             "| method | N | seconds (median) | s / variant | × plain | UNet s | UNet × plain | UNet images "
             f"| projected to {PROJECT_STEPS} steps: s / variant | × plain | all repetitions (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in vc["rows"]:
        lines.append(f"| {METHOD_TEXT.get(r['method'], r['method'])} | {r['variants']} | {r['median_s']:.2f} | "
                     f"{r['per_variant_s']:.2f} | {r['ratio_to_plain']:.2f} | {r['unet_median_s']:.2f} | "
                     f"{r['unet_ratio_to_plain']:.2f} | {r['unet_images']} | "
                     f"{r['projected_s'] / r['variants']:.1f} | {r['projected_ratio_to_plain']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in r['seconds'])} |")
    if not vc["ad"].startswith("measured"):
        lines.append(f"| attention distillation (AD) | – | {vc['ad']} | | | | | | | | |")
    lines += ["", "Where the time of the cached kv call goes (medians, seconds): "
              + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in
                          next(r for r in vc["rows"] if r["method"] == "cached" and r["variants"] == max(
                              x["variants"] for x in vc["rows"]))["phases_median_s"].items()) + "."]
    return lines


def _ad_text(vc: dict) -> str:
    if not vc["ad"].startswith("measured"):
        return vc["ad"].capitalize() + "."
    rows = [r for r in vc["rows"] if r["method"] == "ad"]
    return (f"Attention distillation, {vc['ad'].removeprefix('measured: ')}, reference work cached: "
            + "; ".join(f"N = {r['variants']}: {r['per_variant_s']:.2f} s per variant, {r['ratio_to_plain']:.2f} × "
                        f"plain ({r['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps)"
                        for r in rows)
            + ". Its UNet images count the loss passes (forward to the last distilled layer); their backward "
              "passes are outside the UNet hooks, in the call's other time, which the projection does not "
              "scale: for AD the projected ratio is a lower bound.")


def render_service(entry: dict) -> list[str]:
    s = entry.get("service")
    if not s:
        return ["Not measured in this mode."]
    if "error" in s:
        return [f"Not measured: the service run failed ({s['error']})."]
    lines = [f"One variant, {s['size']}², {s['steps']} steps, kv with the reference cached on both sides, models "
             f"loaded on both sides; {s['reps']} interleaved repetitions, medians.", "",
             "| | in-process `generate_variants` | job through `python -m backend serve` | overhead |", "|---|---|---|---|"]
    for key, label in (("first_progress_s", "time to the first progress event"), ("total_s", "total")):
        v = s[key]
        lines.append(f"| {label} | {v['in_process']:.3f} s | {v['service']:.3f} s | {v['overhead'] * 100:+.1f} % |")
    lines += ["", f"The service's first job (starting it and loading the models included) took "
              f"{s['service_first_job_incl_load_s']:.1f} s; its own job time is {s['job_elapsed_s']:.3f} s (median)."]
    return lines


def render_patch(entry: dict) -> list[str]:
    p = entry.get("patch")
    if not p:
        return ["Not measured in this mode."]
    lines = [f"{p['size']}², one variant per call, {p['reps']} seeds per texture, textures interleaved; metrics "
             "as defined in DESIGN.md (targets: seam ≤ 1.2, appearance ≤ 1.3, copy ≤ 0.7).", "",
             "| texture | mode | s / variant (median) | seam (max) | appearance (median / max) | copy (max) |",
             "|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['texture']} | {r['mode']} | {r['median_s']:.2f} | {r['seam_max']:.2f} | "
                     f"{r['appearance_median']:.2f} / {r['appearance_max']:.2f} | {r['copy_max']:.2f} |")
    return lines


def render_gpu(entry: dict | None) -> list[str]:
    if not entry or "gpu" not in entry:
        reason = (entry or {}).get("not_measured", "no GPU was lent to this project's runs")
        return [f"**Not measured: {reason}.** No numbers are given rather than invented ones. On a CUDA "
                "machine: `TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\" "
                "scripts/setup`, then `scripts/bench --gpu` (fp16, SDPA, channels-last; `--compile` adds "
                "torch.compile of the UNet). Targets: ≤ 0.7 s per variant amortised on an H100, ≤ 6 GB peak VRAM."]
    g = entry["gpu"]
    lines = [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']}",
             f"- **machine**: {_machine_line(entry)}", "",
             f"{g['device']} {g['dtype']}, {g['size']}², {g['steps']} steps, N = {g['variants']}, "
             f"{g['reps']} interleaved repetitions; optimisations: {', '.join(g['optimisations']) or 'none'}; "
             f"attention: {', '.join(g['attention_processors'])}.", "",
             "| method | seconds (median) | s / variant | × plain | peak VRAM (GB) |", "|---|---|---|---|---|"]
    for r in g["rows"]:
        lines.append(f"| {METHOD_TEXT.get(r['method'], r['method'])} | {r['median_s']:.2f} | {r['per_variant_s']:.3f} | "
                     f"{r['ratio_to_plain']:.2f} | {_fmt(r['peak_gb'])} |")
    return lines


def _row(entry: dict | None, method: str, n: int) -> dict | None:
    if not entry or "variant_cost" not in entry:
        return None
    return next((r for r in entry["variant_cost"]["rows"] if r["method"] == method and r["variants"] == n), None)


def render_findings(results: dict) -> list[str]:
    """What the numbers say, computed from them (full run first, quick run for what only it has)."""
    lines = []
    for mode in ("full", "quick", *sorted(k for k in results if k not in ("full", "quick", "gpu"))):
        cached, plain, naive = (_row(results.get(mode), m, 4) for m in ("cached", "plain", "naive"))
        if not (cached and plain and naive):
            continue
        lines.append(
            f"- **Appearance preservation is almost free once the texture is cached** ({mode} run, N = 4): "
            f"cached kv costs {cached['ratio_to_plain']:.2f} × plain IP-Adapter ({cached['unet_ratio_to_plain']:.2f} × "
            f"in the UNet, {cached['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps); the "
            f"naive dual branch costs {naive['ratio_to_plain']:.2f} × ({naive['projected_ratio_to_plain']:.2f} × "
            f"projected). The cached call runs exactly the UNet passes of plain IP-Adapter "
            f"({cached['unet_images']} images), and in the replaced layers it skips its own key/value projections.")
        phases = cached["phases_median_s"]
        lines.append(
            f"- Where a cached call of 4 variants spends its {cached['median_s']:.1f} s ({mode} run): UNet "
            f"{phases['unet']:.1f} s, VAE decoder {phases['vae_decoder']:.1f} s, CLIP image encoder "
            f"{phases['image_encoder']:.1f} s, text encoder {phases['text_encoder']:.1f} s, the rest "
            f"{cached['median_s'] - sum(phases.values()):.1f} s (schedulers, conditioning, Python).")
        break
    plain1, naive1, cached1 = (_row(results.get("full"), m, 1) for m in ("plain", "naive", "cached"))
    if plain1 and naive1 and cached1:
        lines.append(
            f"- At 512² (full run, one variant): cached kv {cached1['ratio_to_plain']:.2f} × plain, the naive "
            f"dual branch {naive1['ratio_to_plain']:.2f} × ({naive1['unet_ratio_to_plain']:.2f} × in the UNet, "
            f"{naive1['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps). At 128² the naive "
            "way looks worse (above) because on this CPU a batch of 1 costs about twice as much per image "
            "as a batch of 8 at that size, and the naive way runs batches of 1 and 2.")
    with_first = [k for k in results if _row(results[k], "first", 4)]
    if with_first:
        first = _row(results[with_first[0]], "first", 4)
        lines.append(
            f"- The **first call** on a texture pays for its reference work once, for all its variants: "
            f"{first['ratio_to_plain']:.2f} × plain at N = 4 in run `{with_first[0]}` "
            f"({first['projected_ratio_to_plain']:.2f} × "
            f"projected): 2 × steps UNet passes of one image (inversion and reference branch) against "
            f"2 × N × steps for the variants."
            + (f" At 512² the reference work of one texture costs {naive1['unet_median_s'] - plain1['unet_median_s']:.1f} s "
               f"of UNet time against {plain1['unet_median_s']:.1f} s for one variant (full run), so a first call "
               f"with N = 4 there would take about "
               f"{1 + (naive1['unet_median_s'] - plain1['unet_median_s']) / (4 * plain1['unet_median_s']):.2f} × "
               "plain's UNet time (estimated from those numbers, not measured)." if plain1 and naive1 else ""))
    lines.append(
        "- Not done yet, and what it would save: the reference branch only has to *record* K/V inside the "
        "window, so it could start from the inversion's latent at the window's first timestep, and the "
        "inversion could stop there: 2 × window instead of 2 × steps UNet passes, a third of today's "
        "reference work at the recipe's window (at N = 4 the first call's UNet work would go from 1.25 × "
        "to 1.08 × plain's: on average 8 + 2/3 instead of 8 + 2 images per step, against plain's 8). Caching the CLIP image embedding with the reference work would "
        "save one ViT-H pass per call on a known texture (the image encoder time above), for plain "
        "IP-Adapter too.")
    return lines


def render(results: dict) -> str:
    """docs/BENCHMARKS.md from every stored mode."""
    out = ["# Benchmarks", "",
           "Generated by `scripts/bench` (`python -m backend.bench`); raw numbers in "
           "[`benchmarks.json`](benchmarks.json). What is compared, and how:", "",
           "- **plain**: plain IP-Adapter, `appearance=\"none\"`: the generated branch only.",
           "- **naive**: kv replacement that recomputes the reference for every variant, as the published "
           "dual-branch kv methods do: N calls of one variant each, every call with an empty reference cache "
           "that keeps nothing, so each variant pays again for the VAE encoding of the reference, its DDIM "
           "inversion (`steps` UNet passes) and the reference branch (`steps` more), besides its own "
           "guided generated branch. The benchmark checks that the engine really did N inversions and N "
           "reference branches.",
           "- **first**: the product's kv replacement on a texture it has not seen yet: the reference work "
           "is done once per call, for all N variants (checked: 1 inversion, 1 reference branch).",
           "- **cached**: the product's kv replacement once the texture's reference work (inverted latents "
           "and the window's K/V) is in the engine's cache: only the generated branch runs (checked: no "
           "inversion, no reference branch). This is the row of `variant_cost_ratio`.",
           "",
           "Every comparison is measured side by side in one run: the repetitions of its cases are "
           "interleaved (round robin, the order rotated every round), and medians are reported. "
           "*UNet s* is the time inside the UNet (forward hooks), *UNet images* how many images went "
           "through it (a guided pass of N variants counts 2N). The models are random-weight models with "
           "the real SD1.5 / ViT-H architecture (`python -m backend make-test-models --full-size`): speed "
           "does not depend on the weights' values.", ""]
    extra_modes = sorted(k for k in results if k not in ("full", "quick", "gpu"))
    for mode in ("full", "quick", *extra_modes):
        entry = results.get(mode)
        title = {"full": "Full run", "quick": "Quick run (`--quick`)"}.get(mode, f"Run `{mode}` (more methods)")
        out += [f"## {title}", ""]
        if not entry or "variant_cost" not in entry:
            out += [f"Not measured yet: run `scripts/bench{' --quick' if mode == 'quick' else ''}`.", ""]
            continue
        if entry.get("note"):
            out += [f"- **note**: {entry['note']}"]
        out += [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']} (took {entry['wall_s'] / 60:.1f} min)",
                f"- **machine**: {_machine_line(entry)}", f"- **configuration**: {entry['why']}",
                f"- **result**: `variant_cost_ratio={entry['variant_cost_ratio']:.3f}` (cached kv over plain, N = {entry.get('variant_cost_ratio_n', 4)}; "
                f"target ≤ {TARGET_RATIO})", "",
                "### Variant cost", "", *render_variant_cost(entry), "",
                "### AD mode", "", _ad_text(entry["variant_cost"]), "",
                "### Service overhead", "", *render_service(entry), "",
                "### Weight-free engine", "", *render_patch(entry), ""]
    out += ["## GPU (`--gpu`)", "", *render_gpu(results.get("gpu")), ""]
    findings = render_findings(results)
    if findings:
        at = out.index("## Full run")
        out[at:at] = ["## What the numbers say", "", *findings, ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- main


def run(setup: Setup, models: dict, *, out_dir: Path = DOCS, command: str = "", sections=("variant_cost", "service", "patch"),
        log=print) -> dict:
    """Measure the CPU sections of `setup` and store them (json + markdown) in `out_dir`."""
    started, wall0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    entry = {"mode": setup.mode, "command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
             "why": setup.why, "setup": asdict(setup), "machine": machine(), "load_average": {"start": load_average()}}
    if "variant_cost" in sections:
        entry["variant_cost"] = bench_variant_cost(models, setup, log=log)
        entry["variant_cost_ratio_n"] = max(setup.variants)
        entry["variant_cost_ratio"] = headline_ratio(entry["variant_cost"], entry["variant_cost_ratio_n"])
    if "service" in sections and setup.service_reps:
        try:  # a service that cannot start or dies must not cost the numbers measured so far
            entry["service"] = bench_service(models, setup, log=log)
        except (OSError, RuntimeError, ValueError) as e:
            log(f"[bench] service overhead not measured: {e}")
            entry["service"] = {"error": f"{type(e).__name__}: {e}"}
    if "patch" in sections and setup.patch_reps:
        entry["patch"] = bench_patch(setup, log=log)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure what a variant costs (plain IP-Adapter, naive dual branch, cached kv), the service "
        "overhead and the weight-free engine, side by side in one run (interleaved repetitions, medians). "
        "Writes docs/BENCHMARKS.md and docs/benchmarks.json; the last line printed is variant_cost_ratio=X "
        "(cached kv over plain, 4 variants). Creates the full-size random-weight models in "
        ".test-models/full on first use (about 5 GB).")
    parser.add_argument("--quick", action="store_true", help="the quick configuration (under 5 minutes on 2 cores)")
    parser.add_argument("--gpu", action="store_true", help="the GPU benchmark on CUDA (fp16, 512², 30 steps, N = 4) "
                        "instead of the CPU sections")
    parser.add_argument("--compile", action="store_true", help="with --gpu: also torch.compile the UNet")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default: the mode's)")
    parser.add_argument("--methods", nargs="+", choices=("plain", "naive", "first", "cached", "ad"),
                        help="the ways to measure (default: the mode's); the results are stored as a run of "
                        "their own, e.g. quick+first+ad")
    parser.add_argument("--variants", type=int, nargs="+", metavar="N",
                        help="the variant counts to measure (default: the mode's; the ratio needs 4)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, here and in the service (default: "
                        "torch's, one per core; 1 is steadier on a machine that other work shares)")
    parser.add_argument("--models", type=Path, default=FULL_MODELS, help="folder of the full-size test models "
                        "(default .test-models/full; written when missing)")
    parser.add_argument("--out-dir", type=Path, default=DOCS, help="where BENCHMARKS.md and benchmarks.json go "
                        "(default docs/)")
    args = parser.parse_args(argv)
    if args.methods and not {"plain", "cached"} <= set(args.methods):
        parser.error("--methods needs plain and cached (the ratio is one over the other)")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the service process inherits it
        import torch

        torch.set_num_threads(args.threads)
    command = "scripts/bench" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    models = full_size_models(args.models)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: --gpu needs a CUDA GPU and the CUDA build of torch (see README, 'CPU and GPU torch'); "
                  "the benchmarks keep saying 'not measured' for the GPU", file=sys.stderr)
            return 2
        setup = GPU if args.reps is None else replace(GPU, reps=args.reps)
        wall0 = time.perf_counter()
        entry = {"mode": "gpu", "command": command, "machine": machine(),
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "gpu": bench_gpu(models, setup, GpuOptions(compile=args.compile))}
        entry["wall_s"] = round(time.perf_counter() - wall0, 1)
        store(args.out_dir, "gpu", entry)
        ratio = next(r for r in entry["gpu"]["rows"] if r["method"] == "cached")["ratio_to_plain"]
    else:
        setup = QUICK if args.quick else FULL
        changes = {k: v for k, v in (("reps", args.reps), ("variants", tuple(args.variants or ())),
                                     ("methods", tuple(args.methods or ()))) if v}
        if "methods" in changes:
            added = [m for m in changes["methods"] if m not in setup.methods]
            changes["mode"] = "+".join([setup.mode, *added]) if added else setup.mode
        if changes:
            setup = replace(setup, **changes, why=setup.why + " This run changed the mode's settings on the "
                            "command line: " + ", ".join(f"{k} {v}" for k, v in changes.items() if k != "mode")
                            + ".")
        ratio = run(setup, models, out_dir=args.out_dir, command=command)["variant_cost_ratio"]
    print(f"wrote {args.out_dir / 'BENCHMARKS.md'} and {args.out_dir / 'benchmarks.json'}")
    print(f"variant_cost_ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
