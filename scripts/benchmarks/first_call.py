"""Where a first call's extra time goes, at any size and step count: each part of the call timed on
its own (interleaved repetitions, medians), then the call composed from them.

A plain call of N variants is `steps` guided UNet passes (a batch of 2N), the text encoder and the VAE
decoder of N latents; a first kv call adds the CLIP image encoder, the VAE encoder and the reference
work: 2 x window UNet passes of one image with the reference branch (reference_passes="branch"),
window passes with the recordings taken in the inversion ("inversion"). Composing lets the 512² /
30-step case be read from a few passes instead of whole calls (a whole 30-step call of 4 variants at
512² takes over ten minutes on 2 CPU cores); the bench's variant-cost section measures whole calls at
the quick configuration.

    python -m scripts.benchmarks.first_call --size 512 --steps 6 10 30 --reps 2 --threads 1 --store
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

from scripts.benchmarks.common import (
    DOCS,
    FULL_MODELS,
    TEXTURE,
    full_size_models,
    interleaved,
    load_average,
    median,
    texture,
)


def parts(models: dict, size: int, variants: int) -> dict:
    """The timed parts of a call on the full-size random-weight models, each a function of nothing."""
    import torch

    from backend.diffusion import engine as diffusion
    from backend.diffusion import models as model_loading
    from backend.diffusion import vae

    pipe = model_loading.load_pipeline(model_loading.resolve(str(models["base"]), str(models["ip_adapter"])))
    pipe.set_ip_adapter_scale(1.0)
    image = texture(TEXTURE, size).convert("RGB")
    cond = diffusion.encode_conditioning(pipe, image, "", "")
    latents = torch.randn(variants, 4, size // 8, size // 8)
    t = torch.tensor(500)

    def unet(n: int, guided: bool):
        text, embeds = cond.batch(n, guided)
        batch = torch.cat([latents[:n]] * (2 if guided else 1))
        return lambda: pipe.unet(batch, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": embeds})

    def no_grad(f):
        def run():
            with torch.no_grad():
                f()
        return run

    device = pipe._execution_device
    return {name: no_grad(f) for name, f in {
        "unet_guided_pass": unet(variants, True),  # one step of the generated branch
        "unet_one_image_pass": unet(1, False),  # one inversion or reference-branch step
        "image_encoder": lambda: pipe.prepare_ip_adapter_image_embeds(image, None, device, 1, True),
        "vae_encoder": lambda: vae.encode_reference(pipe, image, size),
        "vae_decoder": lambda: vae.decode(pipe, latents),
        "text_encoder": lambda: pipe.encode_prompt("", device, 1, True),
    }.items()}


def compose(seconds: dict, steps: int, window: int) -> dict:
    """A plain and a first call (both ways) from the parts' medians, and what the first pays beyond plain."""
    one, fixed = seconds["unet_one_image_pass"], seconds["image_encoder"] + seconds["vae_encoder"]
    plain = steps * seconds["unet_guided_pass"] + seconds["vae_decoder"] + seconds["text_encoder"]
    out = {"plain_s": round(plain, 2)}
    for way, passes in (("branch", 2 * window), ("inversion", window)):
        first = plain + fixed + passes * one
        out[way] = {"first_s": round(first, 2), "first_call_ratio": round(first / plain, 3),
                    "beyond_plain_s": {"image_encoder": round(seconds["image_encoder"], 2),
                                       "vae_encoder": round(seconds["vae_encoder"], 2),
                                       "reference_passes": round(passes * one, 2), "passes": passes}}
    out["ratio_without_image_encoder"] = {way: round((out[way]["first_s"] - seconds["image_encoder"]) / plain, 3)
                                          for way in ("branch", "inversion")}
    return out


def render_first_call(entry: dict | None) -> list[str]:
    """The stored breakdowns (by size) as markdown."""
    if not entry:
        return ["Not measured yet: run `python -m scripts.benchmarks.first_call --store`."]
    out = []
    for size, r in sorted(entry.items(), key=lambda item: int(item[0])):
        p = r["parts_median_s"]
        out += [f"{size}², N = {r['variants']}, {r['threads']} torch thread(s), {r['reps']} interleaved repetitions, "
                f"medians; {r['date']}, load average {r['load_average']['start'][0]} at start, "
                f"{r['load_average']['end'][0]} at end. Parts (s): guided UNet pass (batch {2 * r['variants']}) "
                f"{p['unet_guided_pass']:.2f}, UNet pass of one image {p['unet_one_image_pass']:.2f}, CLIP image "
                f"encoder {p['image_encoder']:.2f}, VAE encoder {p['vae_encoder']:.2f}, VAE decoder "
                f"({r['variants']} latents) {p['vae_decoder']:.2f}, text encoder {p['text_encoder']:.2f}.", "",
                "| steps (window) | plain s | first call × plain: branch | inversion | without the CLIP encoder: "
                "branch | inversion | beyond plain (branch): CLIP, VAE encoder, reference passes (s) |",
                "|---|---|---|---|---|---|---|"]
        for steps, c in sorted(r["composed"].items(), key=lambda item: int(item[0])):
            b = c["branch"]["beyond_plain_s"]
            out.append(f"| {steps} ({b['passes'] // 2}) | {c['plain_s']:.1f} | {c['branch']['first_call_ratio']:.3f} | "
                       f"{c['inversion']['first_call_ratio']:.3f} | {c['ratio_without_image_encoder']['branch']:.3f} | "
                       f"{c['ratio_without_image_encoder']['inversion']:.3f} | {b['image_encoder']:.2f}, "
                       f"{b['vae_encoder']:.2f}, {b['reference_passes']:.2f} ({b['passes']} passes) |")
        out.append("")
    return out[:-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmarks.first_call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, nargs="+", default=[30], help="step counts to compose (window: the last third)")
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared machine)")
    parser.add_argument("--store", action="store_true", help="add the result (by size) to docs/benchmarks.json "
                        "and BENCHMARKS.md")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from backend.diffusion import balance

    load_start, wall = load_average(), time.perf_counter()
    times = interleaved(parts(full_size_models(FULL_MODELS), args.size, args.variants), args.reps)
    seconds = {name: median(values) for name, values in times.items()}
    result = {"size": args.size, "variants": args.variants, "reps": args.reps,
              "parts_median_s": {k: round(v, 3) for k, v in seconds.items()},
              "composed": {steps: compose(seconds, steps, len(balance.settings().window_steps(steps)))
                           for steps in args.steps},
              "load_average": {"start": load_start, "end": load_average()},
              "wall_s": round(time.perf_counter() - wall, 1), "threads": torch.get_num_threads(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print(json.dumps(result, indent=1))
    if args.store:
        from scripts.benchmarks.cli import store
        from scripts.benchmarks.report import load_results

        entry = dict(load_results(DOCS / "benchmarks.json").get("first_call") or {})
        entry[str(args.size)] = result
        store(DOCS, "first_call", entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
