"""Section 1: what a variant costs, per method (plain, naive, first, cached, ad, diffusers' pipeline,
the engine as it was) and variant count."""

from __future__ import annotations

import contextlib
import resource
import tempfile
import time
from collections.abc import Callable

from scripts.benchmarks.common import (
    PROJECT_STEPS,
    SKIP,
    TEXTURE,
    Setup,
    interleaved,
    median,
    texture,
)
from scripts.benchmarks.peer import as_before, diffusers_call


class PhaseClock:
    """Seconds spent in each model of the pipeline (forward hooks), and the UNet's images per pass.

    The phases are the UNet, the CLIP image encoder, the text encoder, the VAE encoder and decoder,
    and the report card's CLIP-I (its encoder passes over the variants count there, not as the image
    encoder's: diffusers' pipeline makes no card, so the peer comparison can leave it out); whatever
    else a call costs (schedulers, attention bookkeeping, Python) is the call's time minus their sum. On a GPU the hooks synchronise, so the times are the kernels' own.
    """

    PARTS = ("unet", "image_encoder", "text_encoder", "vae_encoder", "vae_decoder", "report_card")

    def __init__(self, pipe):
        import torch

        self._sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
        self.modules = {"unet": pipe.unet, "image_encoder": pipe.image_encoder, "text_encoder": pipe.text_encoder,
                        "vae_encoder": pipe.vae.encoder, "vae_decoder": pipe.vae.decoder}
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.unet_images = 0  # sum of the UNet's batch sizes: one image through the UNet once = 1
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._started: dict[str, float] = {}
        self._handles = []

    def __enter__(self) -> PhaseClock:
        from backend.diffusion import clip_similarity

        self._card = clip_similarity.similarities
        clip_similarity.similarities = self._timed_card
        for name, module in self.modules.items():
            if module is None:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            # always_call: AD's loss passes end in an exception at the last distilled layer
            self._handles.append(module.register_forward_hook(self._post(name), always_call=True))
        return self

    def __exit__(self, *exc) -> None:
        from backend.diffusion import clip_similarity

        clip_similarity.similarities = self._card
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _timed_card(self, *args, **kwargs):
        self._sync()
        encoder, started = self.seconds["image_encoder"], time.perf_counter()
        try:
            return self._card(*args, **kwargs)
        finally:
            self._sync()
            self.seconds["report_card"] += time.perf_counter() - started
            self.seconds["image_encoder"] = encoder

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
        """The totals since the last take, then zero them; with the process's minor page faults and
        kernel CPU seconds in that time (the allocator's share: fresh pages of large tensors)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {**{k: round(v, 4) for k, v in self.seconds.items()}, "unet_images": self.unet_images,
               "minor_faults": usage.ru_minflt - self._usage.ru_minflt,
               "system_s": round(usage.ru_stime - self._usage.ru_stime, 3)}
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.unet_images = 0
        self._usage = usage
        return out


@contextlib.contextmanager
def private_reference_cache(keep: bool):
    """Run with an empty reference cache of the diffusion engine, then put the real one back.

    keep=False: the private cache keeps nothing, so every call redoes the reference work (the naive
    dual branch); keep=True: an ordinary, empty cache (the first call on a new texture).
    """
    from backend.diffusion import engine as diffusion
    from backend.diffusion.reference_cache import ReferenceCache

    saved = diffusion.reference_cache, diffusion.image_embeds_cache
    diffusion.reference_cache = ReferenceCache(None if keep else 0)
    diffusion.image_embeds_cache = ReferenceCache(None if keep else 0)
    try:
        yield diffusion.reference_cache
    finally:
        diffusion.reference_cache, diffusion.image_embeds_cache = saved


def reference_work_done() -> tuple[int, int]:
    from backend.diffusion import engine as diffusion

    return diffusion.counters["inversions"], diffusion.counters["reference_branches"]


def _expect_reference_work(method: str, before: tuple[int, int], expected: int, branches: int | None = None) -> None:
    after = reference_work_done()
    done = (after[0] - before[0], after[1] - before[1])
    wanted = (expected, expected if branches is None else branches)
    if done != wanted:
        raise RuntimeError(f"benchmark case {method!r} did {done[0]} inversion(s) and {done[1]} reference "
                           f"branch(es), expected {wanted[0]} and {wanted[1]}: it would not measure what it claims")


def variant_methods(generate: Callable[..., list], setup: Setup, peer: Callable[[int], list] | None = None,
                    sketch: dict | None = None) -> dict[str, Callable[[int], list]]:
    """The ways of making n variants, each a function of n; `generate(variants=, seed=, appearance=)`;
    `peer(n)`: diffusers' pipeline (peer.diffusers_call); `sketch`: the keywords of LGP sketch
    guidance (sketch, lgp), for the "lgp" case."""
    seed = setup.seed

    def counted(method: str, expected: Callable[[int], int], make: Callable[[int], list], branches: bool = True):
        def case(n):
            before = reference_work_done()
            images = make(n)
            _expect_reference_work(method, before, expected(n), None if branches else 0)
            return images
        return case

    def naive_images(n):
        with private_reference_cache(keep=False):
            return [image for i in range(n) for image in generate(variants=1, seed=seed + i, appearance="kv")]

    def first_images(n):
        with private_reference_cache(keep=True):
            return generate(variants=n, seed=seed, appearance="kv")

    def before(full_replay: bool, make):
        def case(n):
            with as_before(full_replay):
                return make(n)
        return case

    def first_in_inversion(n):  # the recordings taken in the inversion's passes: no reference branch
        with private_reference_cache(keep=True):
            return generate(variants=n, seed=seed, appearance="kv", reference_passes="inversion")

    def cached_images(n):
        return generate(variants=n, seed=seed, appearance="kv")

    methods = {
        "plain": counted("plain", lambda n: 0, lambda n: generate(variants=n, seed=seed, appearance="none")),
        "naive": counted("naive", lambda n: n, naive_images),
        "first": counted("first", lambda n: 1, first_images),
        "cached": counted("cached", lambda n: 0, cached_images),
        "first_inversion": counted("first_inversion", lambda n: 1, first_in_inversion, branches=False),
        "ad": counted("ad", lambda n: 0, lambda n: generate(variants=n, seed=seed, appearance="ad")),
        "first_before": counted("first_before", lambda n: 1, before(True, first_images)),
        "cached_before": counted("cached_before", lambda n: 0, before(False, cached_images)),
    }
    if peer is not None:
        methods["diffusers"] = counted("diffusers", lambda n: 0, peer)
    if sketch is not None:
        methods["lgp"] = counted("lgp", lambda n: 0, lambda n: generate(variants=n, seed=seed, appearance="kv",
                                                                         sketch_mode="lgp", **sketch))
    return methods


def sketch_keywords(models: dict, size: int, folder) -> dict | None:
    """LGP sketch guidance's keywords for the "lgp" case: a sketch of crossing lines written to
    `folder`, the full-size random-weight LGP (None when the models have none)."""
    from pathlib import Path

    from PIL import Image, ImageDraw

    lgp = Path(models["base"]).parent / "lgp"
    if not lgp.exists():
        return None
    sketch = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(sketch)
    for k in range(1, 4):
        draw.line([(0, k * size // 4), (size, k * size // 4)], fill="white", width=2)
        draw.line([(k * size // 4, 0), (k * size // 4, size)], fill="white", width=2)
    path = Path(folder) / "sketch.png"
    sketch.save(path)
    return {"sketch": str(path), "lgp": str(lgp)}


def bench_variant_cost(models: dict, setup: Setup, *, device: str | None = None, dtype: str | None = None,
                       log=print) -> dict:
    """Section 1 (and 2, AD): every method and N interleaved; seconds, phases and ratios to plain."""
    from backend import generate_variants
    from backend.diffusion import models as model_loading
    reference = texture(TEXTURE, setup.size)
    extra = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}

    def generate(**kw):
        return generate_variants(reference, base=str(models["base"]), ip_adapter=str(models["ip_adapter"]),
                                 engine="diffusion", size=setup.size, steps=setup.steps, **extra, **kw)

    t0 = time.perf_counter()
    generate(variants=1, seed=setup.seed, appearance="none")  # loads the pipeline, warms allocators
    load_s = time.perf_counter() - t0
    generate(variants=1, seed=setup.seed, appearance="kv")  # does the reference work: "cached" finds it
    for n in sorted(set(setup.variants) - {1}):  # the first pass at a new batch size sets up its kernels
        generate(variants=n, seed=setup.seed, appearance="none")
    spec = model_loading.loaded_specs()[0]
    pipe = model_loading.load_pipeline(spec)
    scratch = tempfile.TemporaryDirectory()
    sketch = sketch_keywords(models, setup.size, scratch.name) if "lgp" in setup.methods else None
    methods = variant_methods(generate, setup, diffusers_call(pipe, reference, setup, _default_guidance()), sketch)
    if sketch is not None:  # loads the LGP and does its call's reference work: "lgp" finds it cached
        generate(variants=1, seed=setup.seed, appearance="kv", sketch_mode="lgp", **sketch)
    chosen = [m for m in setup.methods if m in methods]

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
        with scratch:
            times = interleaved({name: case for name, case in cases.items()}, setup.reps, record)

    rows = _rows(keys, times, phases, setup.steps)
    return {
        "texture": TEXTURE, "size": setup.size, "steps": setup.steps, "reps": setup.reps,
        "window_steps": _window_steps(setup.steps), "guidance_scale": _default_guidance(),
        "device": spec.device, "dtype": spec.dtype, "first_call_incl_load_s": round(load_s, 2),
        "ad": ad_status(setup), "guided_steps": guided_steps(setup.steps),
        "rows": rows,
    }


def _rows(keys: dict, times: dict, phases: dict, steps: int) -> list[dict]:
    """One row per case: seconds, UNet time and images, the projection to PROJECT_STEPS, ratios to plain."""
    rows = []
    for name, (method, n) in keys.items():
        unet = [p["unet"] for p in phases[name]]
        row = {"method": method, "variants": n, "seconds": [round(t, 3) for t in times[name]],
               "median_s": round(median(times[name]), 3), "per_variant_s": round(median(times[name]) / n, 3),
               "unet_median_s": round(median(unet), 3), "unet_images": phases[name][0]["unet_images"],
               "projected_s": round(median(t - u + u * PROJECT_STEPS / steps for t, u in zip(
                   times[name], unet, strict=True)), 3),
               "minor_faults_median": int(median(p["minor_faults"] for p in phases[name])),
               "system_s_median": round(median(p["system_s"] for p in phases[name]), 3),
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
    return rows


def ad_status(setup: Setup) -> str:
    if "ad" not in setup.methods:
        return "not measured in this mode: `--methods plain naive first cached ad` measures it (run quick+first+ad)"
    from backend.params import DiffusionOptions

    return (f"measured: {DiffusionOptions.ad_iterations} Adam iterations (lr {DiffusionOptions.ad_lr}) per "
            "window step, the engine's defaults")


def guided_steps(steps: int) -> dict:
    """The steps at which AD and LGP pay their backward passes, and AD's iterations per step."""
    from backend.diffusion.controls.sketch import guided_window
    from backend.params import DiffusionOptions

    return {"ad": _window_steps(steps), "ad_iterations": DiffusionOptions.ad_iterations,
            "lgp": len(guided_window(DiffusionOptions.sketch_window, steps))}


def control_costs(variant_cost: dict, n: int = 4) -> dict[str, float]:
    """What each guided control adds per guided step (seconds, over the cached kv call, N = n) and the
    first call with the recordings taken in the inversion, where their rows were measured."""
    rows = {r["method"]: r for r in variant_cost["rows"] if r["variants"] == n}
    cached, guided, out = rows["cached"]["median_s"], variant_cost.get("guided_steps", {}), {}
    if "first_inversion" in rows:
        out["first_call_ratio_inversion"] = rows["first_inversion"]["ratio_to_plain"]
    if "ad" in rows and guided.get("ad"):
        out["ad_ratio"] = rows["ad"]["ratio_to_plain"]
        out["ad_step_s"] = round((rows["ad"]["median_s"] - cached) / guided["ad"], 3)
        if guided.get("ad_iterations"):
            out["ad_iteration_s"] = round(out["ad_step_s"] / guided["ad_iterations"], 3)
    if "lgp" in rows and guided.get("lgp"):
        out["lgp_ratio"] = round(rows["lgp"]["median_s"] / cached, 3)  # kv + LGP over kv
        out["lgp_step_s"] = round((rows["lgp"]["median_s"] - cached) / guided["lgp"], 3)
    return out


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


def ratio_lines(variant_cost: dict, n: int = 4) -> dict[str, float]:
    """The three ratios `scripts/bench` prints last, those whose rows were measured:
    variant_cost_ratio (cached / plain), first_call_ratio (first / plain), peer_ratio (cached /
    diffusers' pipeline), all at N = n."""
    rows = {r["method"]: r for r in variant_cost["rows"] if r["variants"] == n}
    out = {"variant_cost_ratio": rows["cached"]["ratio_to_plain"]}
    if "first" in rows:
        out["first_call_ratio"] = rows["first"]["ratio_to_plain"]
    if "diffusers" in rows:
        cached, peer = rows["cached"], rows["diffusers"]["median_s"]
        out["peer_ratio"] = round(cached["median_s"] / peer, 3)
        card = cached["phases_median_s"].get("report_card")
        if card:  # the same work as the pipeline: the product's call less the card it alone makes
            out["peer_ratio_without_card"] = round((cached["median_s"] - card) / peer, 3)
    return out
