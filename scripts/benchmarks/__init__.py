"""Benchmarks: what a variant costs, side by side with plain IP-Adapter, diffusers' own pipeline and
the naive dual branch.

`python -m scripts.benchmarks [--quick] [--gpu]` (what `scripts/bench` runs) measures, in one process:

1. variant cost: N = 1 and N = 4 variants of one texture, the same size and steps, made
   - `plain`:  plain IP-Adapter (`appearance="none"`);
   - `naive`:  kv replacement that recomputes the reference per variant, as the published dual-branch
               kv methods do: one call per variant, each with an empty reference cache that keeps
               nothing, so every variant pays for the VAE encoding, the DDIM inversion and the
               reference branch again;
   - `first`:  the product's kv replacement on a texture it has not seen (the reference work is done
               once, for all N variants of the call);
   - `cached`: the product's kv replacement with the texture's reference work already cached;
   - `diffusers`: diffusers' `StableDiffusionPipeline` + `load_ip_adapter` on the same modules (peer.py);
   - `ad`: attention distillation, reference work cached;
   - `first_before`, `cached_before` (opt-in): the engine with the costs it had before #12 put back
     (peer.as_before), for a before/after measured in the same run;
2. service overhead: one job through `python -m backend serve` against the same call in-process,
   time to the first progress event and in total;
3. the weight-free engine: seconds per 512² variant and its metrics on four real textures;
4. `--gpu`: the product and diffusers' pipeline on a CUDA GPU, fp16, 512², 30 steps, N = 4, with
   peak VRAM per method.

Every comparison is measured side by side: the repetitions of its cases are interleaved (round
robin, with the order rotated every round) and medians are reported, because shared machines are
noisy. The sanity of each case is checked while it runs (how many inversions and reference branches
the engine actually did), so a benchmark cannot silently measure something else.

Results go to docs/benchmarks.json (raw numbers, one entry per mode: quick, full, gpu) and
docs/BENCHMARKS.md (rendered from all entries). The last lines printed are `variant_cost_ratio=X`
(cached kv over plain), `first_call_ratio=Y` (first call over plain) and `peer_ratio=Z` (cached kv
over diffusers' pipeline), N = 4, each where its rows were measured; before them
`peer_ratio_without_card` (the same less the report card's CLIP-I, which the pipeline does not make)
and what the guided controls cost.

One module per thing measured: variant_cost, service, patch, gpu, speed (few-step sampling and
previews), first_call (a first call's parts), production_size, correspondence, addon_pixels; peer
holds what the product is compared with, common the setups, the timing and the inputs, report
renders BENCHMARKS.md, findings its sentences computed from the numbers, cli is the command line.
"""
