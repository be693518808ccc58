"""Benchmarks: what a variant costs, side by side with plain IP-Adapter and the naive dual branch.

`python -m scripts.benchmarks [--quick] [--gpu]` (what `scripts/bench` runs) measures, in one process:

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

One module per thing measured: variant_cost, service, patch, gpu; common holds the setups, the
timing and the inputs, report renders BENCHMARKS.md, cli is the command line.
"""
