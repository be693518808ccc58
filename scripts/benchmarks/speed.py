"""Few-step sampling and previews: `fast_cost_ratio` (a cached kv variant at 8 fast steps over the same
at 30 full steps) and `preview_decode_ratio` (TAESD over the full VAE decoding the same latents).

The decoders are timed at DECODE_SIZE (or the run's size when larger), each the way the engine calls
it (latents to PIL images, the tiling on: the final decode and the draft decode), interleaved; below
about 256² their fixed costs dominate. Their FLOPs (counted on meta-device copies) give the ratio's
floor: TAESD's decoder does 0.057 x the full decoder's work at every size.

Fast and full are timed one after the other, not interleaved: switching between them fuses or
restores the LoRA (seconds on a CPU), which a user pays once per switch, not once per variant; each
is warmed up first (its reference work cached, the LoRA fused), then timed `reps` times."""

from __future__ import annotations

import json
import time

from scripts.benchmarks.common import TEXTURE, Setup, interleaved, load_average, median, texture

FAST_STEPS, FULL_STEPS = 8, 30
DECODE_SIZE = 256
TARGETS = {"fast_cost_ratio": 0.30, "preview_decode_ratio": 0.05}


def bench_speed(models: dict, setup: Setup, *, device: str | None = None, dtype: str | None = None,
                log=print) -> dict:
    import torch

    from backend import generate_variants
    from backend.diffusion import engine, fast, vae
    from backend.diffusion import models as model_loading
    from backend.diffusion.tiling import tiling

    size, n = setup.size, 1
    reference = texture(TEXTURE, size)
    started = load_average()

    def generate(**kw):
        return generate_variants(reference, base=str(models["base"]), ip_adapter=str(models["ip_adapter"]),
                                 engine="diffusion", size=size, variants=n, seed=setup.seed, appearance="kv",
                                 device=device, dtype=dtype, fast_lora=str(models["fast_lora"]), **kw)

    cases = {"full": dict(steps=FULL_STEPS),
             "fast": dict(sampler="fast", fast_steps=FAST_STEPS),  # LCM-LoRA's recipe: guidance 1
             "fast_cfg": dict(sampler="fast", fast_steps=FAST_STEPS, fast_scheduler="ddim-trailing",
                              guidance_scale=5.0)}  # Hyper-SD's recipe: guidance kept
    times: dict[str, list[float]] = {}
    cards: dict[str, dict] = {}  # the report card of each case's variant: same texture, same seed
    for name, kw in cases.items():
        images = generate(**kw)  # warm-up: the reference work of this schedule cached, the LoRA fused or restored
        cards[name] = json.loads(images[0].info["parameters"])["card"]
        inversions = engine.counters["inversions"]
        times[name] = []
        for rep in range(setup.reps):
            start = time.perf_counter()
            generate(**kw)
            times[name].append(time.perf_counter() - start)
            log(f"[bench] speed {name:<8} rep {rep + 1}/{setup.reps}: {times[name][-1]:7.2f} s")
        if engine.counters["inversions"] != inversions:
            raise RuntimeError(f"the {name} variants were not cached: the benchmark measured the wrong thing")
    full = median(times["full"])
    rows = [{"case": name, "steps": cases[name].get("fast_steps", FULL_STEPS), "seconds": [round(t, 3) for t in ts],
             "median_s": round(median(ts), 3), "ratio_to_full": round(median(ts) / full, 3), "card": cards[name]}
            for name, ts in times.items()]

    spec = model_loading.loaded_specs()[0]
    pipe = model_loading.load_pipeline(spec)
    fast.use(pipe, None)
    taesd = vae.load_taesd(vae.resolve_taesd(models["taesd"]), spec.device, spec.dtype)
    scaling = pipe.vae.config.scaling_factor
    side = max(size, DECODE_SIZE)
    latents = torch.randn((n, 4, side // 8, side // 8), generator=torch.Generator().manual_seed(setup.seed))
    latents = latents.to(device=pipe.device, dtype=pipe.vae.dtype)
    decoders = {"vae": lambda: vae.decode(pipe, latents),
                "taesd": lambda: vae.to_images(vae.taesd_decode(taesd, latents, scaling), "taesd")}
    with torch.no_grad(), tiling("both", pipe.vae.decoder, taesd.decoder):
        for decode in decoders.values():
            decode()
        decode_times = interleaved(decoders, max(3, setup.reps))
    flops = decoder_gflops(pipe.vae, taesd, side)
    ratios = {"fast_cost_ratio": rows[1]["ratio_to_full"],
              "preview_decode_ratio": round(median(decode_times["taesd"]) / median(decode_times["vae"]), 4)}
    return {"size": size, "variants": n, "reps": setup.reps, "device": spec.device, "dtype": spec.dtype,
            "texture": TEXTURE, "rows": rows, "decode_size": side,
            "decode": {name: {"seconds": [round(t, 4) for t in ts], "median_s": round(median(ts), 4),
                              "gflop": flops[name]} for name, ts in decode_times.items()},
            "ratios": ratios, "targets": TARGETS, "load_average": {"start": started, "end": load_average()}}


def decoder_gflops(full_vae, taesd, side: int) -> dict[str, float]:
    """GFLOPs of one decode of a side x side image by each decoder (copies of their configs on the meta
    device: shapes only, nothing computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, model in (("vae", full_vae), ("taesd", taesd)):
        with torch.device("meta"):
            copy = type(model).from_config(model.config)
        latents = torch.empty((1, 4, side // 8, side // 8), device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            copy.decode(latents)
        out[name] = round(counter.get_total_flops() / 1e9, 2)
    return out


def render_speed(speed: dict | None) -> list[str]:
    if not speed:
        return ["Not measured in this run."]
    lines = [f"Measured by `{speed['command']}` on {speed['date']}." if speed.get("command") else "",
             f"Texture `{speed['texture']}`, {speed['size']}², N = {speed['variants']}, {speed['device']} "
             f"{speed['dtype']}, kv replacement with the reference work cached, {speed['reps']} repetitions "
             "each after a warm-up (fast and full one after the other: switching fuses or restores the LoRA), "
             f"medians; load average {speed['load_average']['start']} → {speed['load_average']['end']}"
             + (" (other work shared the 2 cores: only the ratios mean something)." if _shared(speed) else "."), "",
             "| case | steps | seconds (median) | × full | card: look | same look | tiles | remake at Full |",
             "|---|---|---|---|---|---|---|---|"]
    text = {"full": "full sampler (DDIM)", "fast": "fast: LCM-LoRA recipe (TCD, guidance 1)",
            "fast_cfg": "fast with guidance 5 (Hyper-SD recipe: DDIM trailing, CFG kept)"}
    for r in speed["rows"]:
        card = r.get("card") or {}
        verdicts = " | ".join(_yes(card.get(key)) for key in ("same_look", "tiles", "remake_full"))
        look = f"{card['look']:.2f}" if "look" in card else "–"
        lines.append(f"| {text.get(r['case'], r['case'])} | {r['steps']} | {r['median_s']:.2f} | {r['ratio_to_full']:.3f} "
                     f"| {look} | {verdicts} |")
    if any(r.get("card") for r in speed["rows"]):
        lines += ["", "The report card of each case's variant (same texture, same seed; a Fast variant whose look "
                  "verdict fails is sent back to Full). On these random-weight models every variant is noise, so "
                  "the verdicts say nothing about the fidelity of few-step sampling: they show that the gate runs."]
    d = speed["decode"]
    side = speed.get("decode_size", speed["size"])
    work = (f"; their work {d['vae']['gflop']:.0f} and {d['taesd']['gflop']:.1f} GFLOP, so the ratio's floor at equal "
            f"speed per FLOP is {d['taesd']['gflop'] / d['vae']['gflop']:.3f}" if "gflop" in d["vae"] else "")
    lines += ["", f"Decoding the same {side}² latents to images with the tiling on (the final decode and the draft "
              f"decode): full VAE {d['vae']['median_s']:.3f} s, TAESD {d['taesd']['median_s']:.4f} s (medians of "
              f"interleaved runs){work}.", ""]
    for name, value in speed["ratios"].items():
        target = speed["targets"][name]
        lines.append(f"- `{name}` = **{value:.3f}** (target ≤ {target}: {'met' if value <= target else 'not met'})")
    return lines


def _yes(value) -> str:
    return "–" if value is None else ("yes" if value else "no")


def _shared(speed: dict) -> bool:
    """Whether more than the benchmark's own threads (at most 2 on this machine) kept the cores busy."""
    return max(max(speed["load_average"]["start"]), max(speed["load_average"]["end"])) > 2.5
