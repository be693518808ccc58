"""Section 4 (`--gpu`): the product against plain IP-Adapter and diffusers' pipeline on a CUDA GPU,
seconds and peak memory per method."""

from __future__ import annotations

import time
from dataclasses import dataclass

from scripts.benchmarks.common import GPU, TEXTURE, Setup, interleaved, median, texture
from scripts.benchmarks.peer import diffusers_call
from scripts.benchmarks.speed import FAST_STEPS
from scripts.benchmarks.variant_cost import variant_methods


@dataclass
class GpuOptions:
    channels_last: bool = True
    compile: bool = False  # torch.compile of the UNet (the first calls compile: warm-up runs them)
    decode_one_at_a_time: bool = True  # the engine's option: the VAE decoder's peak for one image, not N


def bench_gpu(models: dict, setup: Setup = GPU, options: GpuOptions | None = None, *, device: str = "cuda",
              dtype: str = "float16", log=print) -> dict:
    """Section 5: the product (kv cached, first call, naive; Full at `setup.steps`, Fast at 8 steps of
    the LCM-LoRA recipe) against plain IP-Adapter, in the engine and through diffusers' own pipeline
    call, N variants at once; seconds per variant and peak memory.

    The engine's attention runs through PyTorch SDPA (diffusers' AttnProcessor2_0 and the kv
    processor both call F.scaled_dot_product_attention). `device` is a parameter so that the code
    path can be exercised on a CPU with the tiny models.
    """

    from backend import generate_variants
    from backend.diffusion import models as model_loading

    options = options or GpuOptions()
    n = setup.variants[-1]
    reference = texture(TEXTURE, setup.size)
    base, ip = str(models["base"]), str(models["ip_adapter"])

    def generate(**kw):
        return generate_variants(reference, base=base, ip_adapter=ip, engine="diffusion", size=setup.size,
                                 steps=setup.steps, device=device, dtype=dtype,
                                 decode_one_at_a_time=options.decode_one_at_a_time, **kw)

    generate(variants=1, seed=setup.seed, appearance="kv")  # loads, primes the cache
    spec = model_loading.loaded_specs()[0]
    pipe = model_loading.load_pipeline(spec)
    applied = _optimise(pipe, options)
    attention = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})

    methods = variant_methods(generate, setup, diffusers_call(pipe, reference, setup, _guidance()))
    cases = {name: (lambda m=methods[name]: m(n)) for name in setup.methods if name in methods}
    peaks: dict[str, list[float]] = {name: [] for name in cases}

    def peaked(name, fn):
        return lambda: peaks[name].extend(_peak_gb(fn, device.startswith("cuda")))

    for fn in cases.values():  # warm-up (and compilation) outside the timings
        fn()
    times = interleaved({name: peaked(name, fn) for name, fn in cases.items()}, setup.reps,
                        lambda name, rep, s: log(f"[bench] gpu {name:<16} rep {rep + 1}/{setup.reps}: {s:7.2f} s"))
    if "fast" in setup.methods:  # after the full cases, not among them: a switch fuses or restores the LoRA
        cases["fast"] = lambda: generate(variants=n, seed=setup.seed, appearance="kv", sampler="fast",
                                         fast_steps=FAST_STEPS, fast_lora=str(models["fast_lora"]))
        cases["fast"]()  # warm-up: the LoRA fused, the fast schedule's reference work cached
        peaks["fast"], times["fast"] = [], []
        for rep in range(setup.reps):
            start = time.perf_counter()
            peaks["fast"].extend(_peak_gb(cases["fast"], device.startswith("cuda")))
            times["fast"].append(time.perf_counter() - start)
            log(f"[bench] gpu {'fast':<16} rep {rep + 1}/{setup.reps}: {times['fast'][-1]:7.2f} s")
    plain = median(times["plain"])
    rows = [{"method": name, "variants": n, "seconds": [round(t, 3) for t in times[name]],
             "median_s": round(median(times[name]), 3), "per_variant_s": round(median(times[name]) / n, 3),
             "ratio_to_plain": round(median(times[name]) / plain, 3),
             "peak_gb": round(max(peaks[name]), 2) if peaks[name] else None} for name in cases]
    return {"size": setup.size, "steps": setup.steps, "fast_steps": FAST_STEPS, "variants": n, "reps": setup.reps, "device": spec.device,
            "dtype": spec.dtype, "optimisations": applied + (["decode one image at a time"] if
                                                              options.decode_one_at_a_time else []),
            "attention_processors": attention, "rows": rows,
            "weights_peak_note": "peak = torch.cuda.max_memory_allocated during the call (weights included)"}


def _guidance() -> float:
    from backend.diffusion import engine

    return engine.DEFAULT_GUIDANCE


def _optimise(pipe, options: GpuOptions) -> list[str]:
    """Apply the chosen optimisations to the loaded pipeline; their names."""
    import torch

    applied = []
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if options.compile:
        pipe.unet.compile()
        applied.append("torch.compile(unet)")
    return applied


def _peak_gb(fn, cuda: bool) -> list[float]:
    """Run `fn`; on CUDA, [its peak allocated memory in GB], else []."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    fn()
    if not cuda:
        return []
    torch.cuda.synchronize()
    return [torch.cuda.max_memory_allocated() / 2**30]
