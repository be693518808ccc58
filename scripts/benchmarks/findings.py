"""What the stored benchmark numbers say, in sentences computed from them: each finding from the
newest run that measured its rows (runs noted as too noisy are skipped)."""

from __future__ import annotations

from scripts.benchmarks.common import PROJECT_STEPS


def _row(entry: dict | None, method: str, n: int) -> dict | None:
    if not entry or "variant_cost" not in entry:
        return None
    return next((r for r in entry["variant_cost"]["rows"] if r["method"] == method and r["variants"] == n), None)


def _first_with(results: dict, *methods: str) -> tuple[str, list[dict]] | None:
    """The newest run with all `methods` at N = 4, and those rows."""
    usable = [m for m in results if not (results[m] or {}).get("unusable_for_findings")]  # noted as too noisy
    for mode in sorted(usable, key=lambda m: str(results[m].get("date", "")), reverse=True):
        rows = [_row(results.get(mode), m, 4) for m in methods]
        if all(rows):
            return mode, rows
    return None


def _cost_findings(results: dict) -> list[str]:
    lines = []
    found = _first_with(results, "cached", "plain")
    if found:
        mode, (cached, plain) = found
        naive = _row(results[mode], "naive", 4)
        lines.append(
            f"- **Appearance preservation is almost free once the texture is cached** ({mode} run, N = 4): "
            f"cached kv costs {cached['ratio_to_plain']:.2f} × plain IP-Adapter ({cached['unet_ratio_to_plain']:.2f} × "
            f"in the UNet, {cached['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps)"
            + (f"; the naive dual branch costs {naive['ratio_to_plain']:.2f} × ({naive['projected_ratio_to_plain']:.2f} × "
               "projected)" if naive else "")
            + f". The cached call runs exactly the UNet passes of plain IP-Adapter ({cached['unet_images']} images), "
            "and in the replaced layers it skips its own key/value projections.")
        phases = cached["phases_median_s"]
        lines.append(
            f"- Where a cached call of 4 variants spends its {cached['median_s']:.1f} s ({mode} run): UNet "
            f"{phases['unet']:.1f} s, VAE decoder {phases['vae_decoder']:.1f} s, CLIP image encoder "
            f"{phases['image_encoder']:.1f} s (the embedding is cached per texture), text encoder "
            f"{phases['text_encoder']:.1f} s, the rest {cached['median_s'] - sum(phases.values()):.1f} s "
            "(schedulers, conditioning, Python).")
    plain1, naive1, cached1 = (_row(results.get("full"), m, 1) for m in ("plain", "naive", "cached"))
    if plain1 and naive1 and cached1:
        lines.append(
            f"- At 512² (full run, one variant): cached kv {cached1['ratio_to_plain']:.2f} × plain, the naive "
            f"dual branch {naive1['ratio_to_plain']:.2f} × ({naive1['unet_ratio_to_plain']:.2f} × in the UNet, "
            f"{naive1['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps). At 128² the naive "
            "way looks worse because on this CPU a batch of 1 costs about twice as much per image "
            "as a batch of 8 at that size, and the naive way runs batches of 1 and 2.")
    return lines


def _first_call_findings(results: dict) -> list[str]:
    found = _first_with(results, "first", "plain")
    if not found:
        return []
    mode, (first, plain) = found
    before = _row(results[mode], "first_before", 4)
    fp, pp = first["phases_median_s"], plain["phases_median_s"]
    extra = first["unet_images"] - plain["unet_images"]
    per_image = (fp["unet"] - pp["unet"]) / extra / (pp["unet"] / plain["unet_images"]) if extra else 0.0
    gap = (f" What it pays beyond plain: the CLIP image encoder {fp['image_encoder'] - pp['image_encoder']:.2f} s "
           "(a new texture; the plain and cached calls of the run find its embedding cached), the VAE encoder "
           f"{fp['vae_encoder']:.2f} s, and {fp['unet'] - pp['unet']:.2f} s of UNet for its {extra} passes of one "
           f"image, each costing {per_image:.1f} × an image of plain's batch of "
           f"{plain['unet_images'] // results[mode]['variant_cost']['steps']} "
           "on this CPU at this size.")
    return [
        f"- The **first call** on a texture pays for its reference work once, for all its variants: "
        f"{first['ratio_to_plain']:.2f} × plain at N = 4 in run `{mode}` ({first['unet_ratio_to_plain']:.2f} × in the "
        f"UNet, {first['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps): the inversion stops at "
        "the kv window's first step and the reference branch runs the window only (2 × window UNet passes "
        f"of one image: {first['unet_images'] - plain['unet_images']} here)"
        + (f"; the same call with the earlier costs put back in the same run (full reference replay, two pads per "
           f"convolution, image encoded every call) costs {before['ratio_to_plain']:.2f} × "
           f"({before['unet_ratio_to_plain']:.2f} × in the UNet)." if before else ".") + gap]


def _card_text(cached: dict, peer: dict) -> str:
    card = cached["phases_median_s"].get("report_card")
    if not card:
        return ""
    return (f" The product's call also makes each variant's report card, whose CLIP-I encodes the variants with "
            f"the IP-Adapter's ViT-H ({card:.2f} s of the call here, a cost that does not grow with the steps or the "
            f"size); the pipeline makes none: without the card {(cached['median_s'] - card) / peer['median_s']:.2f} × "
            "(`peer_ratio_without_card`).")


def _peer_findings(results: dict) -> list[str]:
    found = _first_with(results, "cached", "diffusers")
    if not found:
        return []
    mode, (cached, peer) = found
    encoder = cached["phases_median_s"]["image_encoder"], peer["phases_median_s"]["image_encoder"]
    lines = [
        f"- **Against diffusers' own pipeline** (`StableDiffusionPipeline` + `load_ip_adapter`, same models, DDIM, "
        f"size, steps, guidance, N = 4; run `{mode}`): the cached kv call costs "
        f"{cached['median_s'] / peer['median_s']:.2f} × (`peer_ratio`), with tiling on; without the CLIP image "
        f"encoder on either side (the product caches its embedding per texture, the pipeline encodes every call) "
        f"{(cached['median_s'] - encoder[0]) / (peer['median_s'] - encoder[1]):.2f} ×."
        + _card_text(cached, peer) + " UNet "
        f"{cached['phases_median_s']['unet'] / peer['phases_median_s']['unet']:.2f} ×, VAE decoder "
        f"{cached['phases_median_s']['vae_decoder'] / peer['phases_median_s']['vae_decoder']:.2f} ×; minor page "
        f"faults {cached['minor_faults_median']} against {peer['minor_faults_median']}, kernel CPU "
        f"{cached['system_s_median']:.2f} s against {peer['system_s_median']:.2f} s."]
    before = _row(results[mode], "cached_before", 4)
    if before:
        lines.append(
            f"- The same cached call as before #12 (two padded copies per wrapped convolution, the image encoded "
            f"every call), in the same run: {before['median_s'] / peer['median_s']:.2f} × diffusers' pipeline "
            f"(VAE decoder {before['phases_median_s']['vae_decoder']:.2f} s against "
            f"{cached['phases_median_s']['vae_decoder']:.2f} s now; minor page faults "
            f"{before['minor_faults_median']} against {cached['minor_faults_median']}).")
    return lines


def render_findings(results: dict) -> list[str]:
    """What the numbers say, computed from them (each from the newest run that measured it)."""
    return [*_cost_findings(results), *_first_call_findings(results), *_peer_findings(results)]
