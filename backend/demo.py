"""The demo behind `scripts/demo`: variants of a real CC0 texture, with proof that they tile.

Writes a new folder under the output folder for every run (`out/gravel-patch-s7/`, then
`out/gravel-patch-s7-2/` if that name is taken), so a run never overwrites or deletes anything:

    reference.png                      the texture (scikit-image's CC0 brick, grass or gravel)
    variant-1.png ...                  the variants (parameters in the PNG "parameters" text chunk)
    variant-1-tiled3x3.png ...         each variant repeated 3 x 3: the seam check by eye
    contact_sheet.png                  reference | variants, tiled views (4 copies meet at the
                                       centre, where a seam would show), the metrics below
    metrics.json                       the metrics of every variant and of the reference

and prints the metrics and the written paths. The engine is the best one available here
(`--engine auto`: diffusion when its models are on this machine, else the weight-free patch
engine); the demo says which it used and how to get the diffusion models.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from backend import engines
from backend.framing import center_square, tiled
from backend.images import save_png_atomic, unique_path
from backend.metrics import seam_score, texture_metrics
from backend.params import GenerationParams

TEXTURES = ("brick", "grass", "gravel")  # scikit-image's CC0 textures (from cc0textures.com / DeviantArt)
THUMB = 256  # side of one picture on the contact sheet


def demo_texture(name: str, size: int) -> Image.Image:
    """One of scikit-image's CC0 textures, as a size x size grayscale image."""
    import skimage.data

    if name not in TEXTURES:
        raise ValueError(f"unknown demo texture {name!r}: choose one of {', '.join(TEXTURES)}")
    image = Image.fromarray(getattr(skimage.data, name)())
    return center_square(image, size)


@dataclass
class DemoResult:
    folder: Path
    engine: str
    why: str
    paths: list[Path] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # one per variant
    reference_metrics: dict = field(default_factory=dict)


def run_demo(out: str | os.PathLike, *, texture: str = "gravel", variants: int = 3, seed: int | None = None,
             size: int = GenerationParams.size[0], engine: str = GenerationParams.engine,
             balance: float = GenerationParams.balance, steps: int = GenerationParams.steps,
             base: str | None = None, ip_adapter: str | None = None, on_step=None) -> DemoResult:
    """Make the variants and write everything into a new folder under `out`."""
    import secrets

    from backend.api import generate_variants

    reference = demo_texture(texture, size)
    engine_name, why = engines.resolve(engine, base, ip_adapter)
    seed = secrets.randbelow(2**31) if seed is None else seed
    images = generate_variants(reference, base=base, ip_adapter=ip_adapter, engine=engine_name,
                               variants=variants, seed=seed, steps=steps, size=size, balance=balance,
                               on_step=on_step)
    folder = unique_path(out, f"{texture}-{engine_name}-s{seed}", suffix="")
    folder.mkdir(parents=True)  # fails rather than writing into a folder that appeared meanwhile
    result = DemoResult(folder=folder, engine=engine_name, why=why)
    result.paths.append(save_png_atomic(reference, folder / "reference.png"))
    seam = seam_score(reference)
    result.reference_metrics = {"seam_x": seam["x"], "seam_y": seam["y"]}
    for i, image in enumerate(images, start=1):
        result.paths.append(save_png_atomic(image, folder / f"variant-{i}.png"))
        result.paths.append(save_png_atomic(tiled(image, 3), folder / f"variant-{i}-tiled3x3.png"))
        result.metrics.append(texture_metrics(image, reference))
    title = f"{texture} (scikit-image, CC0) -> {variants} variants, engine {engine_name}, seed {seed}"
    sheet = contact_sheet(reference, images, result.metrics, result.reference_metrics, title)
    result.paths.append(save_png_atomic(sheet, folder / "contact_sheet.png"))
    report = {"texture": texture, "engine": engine_name, "why": why, "seed": seed, "size": size,
              "balance": balance, "reference": result.reference_metrics,
              "variants": [{"file": f"variant-{i}.png", "seed": seed + i - 1, **m}
                           for i, m in enumerate(result.metrics, start=1)]}
    metrics_path = folder / "metrics.json"
    tmp = folder / ".metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, metrics_path)  # atomic; the folder is new, so nothing is replaced
    result.paths.append(metrics_path)
    return result


LEGEND = (
    "seam: wrap-around step / typical step (about 1 = seamless);",
    "appearance: patch-distribution distance / the reference's own half-to-half distance (about 1 = as close as it is to itself);",
    "copy: best correlation of a half-size window with the reference (1 = a shifted copy).",
)
COLUMNS = (("seam x", "seam_x"), ("seam y", "seam_y"), ("appearance", "appearance"), ("copy", "copy"))


def metrics_rows(metrics: list[dict], reference_metrics: dict | None = None) -> list[list[str]]:
    """Header, then one row per image: name and the four numbers ('' where it does not apply)."""
    rows = [[""] + [title for title, _ in COLUMNS]]
    named = ([("reference", reference_metrics)] if reference_metrics else []) + [
        (f"variant {i}", m) for i, m in enumerate(metrics, start=1)]
    for name, m in named:
        rows.append([name] + [f"{m[key]:.2f}" if key in m else "" for _, key in COLUMNS])
    return rows


def metrics_lines(metrics: list[dict], reference_metrics: dict | None = None) -> list[str]:
    """The metrics table as text, for the terminal."""
    rows = metrics_rows(metrics, reference_metrics)
    lines = [f"{row[0]:<12}" + "".join(f"{cell:>12}" for cell in row[1:]) for row in rows]
    return lines + list(LEGEND)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _seam_view(image: Image.Image) -> Image.Image:
    """One tile's worth of the tiled texture with four copies meeting at its centre: seams show there."""
    w, h = image.size
    return tiled(image, 2).crop((w // 2, h // 2, w // 2 + w, h // 2 + h))


def contact_sheet(reference: Image.Image, variants: list[Image.Image], metrics: list[dict],
                  reference_metrics: dict | None = None, title: str = "") -> Image.Image:
    """reference | variants on top, each tiled below (four copies meet at the centre), metrics under."""
    mode = "L" if reference.mode == "L" and all(v.mode in ("L", "LA") for v in variants) else "RGB"
    font, small = _font(18), _font(14)
    line, pad = 26, 8
    rows = metrics_rows(metrics, reference_metrics)
    columns = 1 + len(variants)
    width = columns * THUMB + (columns + 1) * pad
    height = line + 2 * (THUMB + line) + 2 * pad + line * len(rows) + 20 * len(LEGEND) + pad
    sheet = Image.new(mode, (width, height), 255 if mode == "L" else (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    ink = 0 if mode == "L" else (0, 0, 0)
    draw.text((pad, 4), title, fill=ink, font=font)

    def flat(image):  # alpha shown over white, as a browser would
        if image.mode in ("LA", "RGBA"):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return image.convert(mode).resize((THUMB, THUMB), Image.Resampling.LANCZOS)

    pictures = [("reference", reference)] + [(f"variant {i}", v) for i, v in enumerate(variants, start=1)]
    for column, (name, image) in enumerate(pictures):
        x, y = pad + column * (THUMB + pad), line
        draw.text((x, y + 4), name, fill=ink, font=font)
        sheet.paste(flat(image), (x, y + line))
        y += line + THUMB
        draw.text((x, y + 4), "tiled: 4 copies meet at the centre", fill=ink, font=small)
        sheet.paste(flat(_seam_view(image)), (x, y + line))
    y = line + 2 * (THUMB + line) + 2 * pad
    for row in rows:
        draw.text((pad, y), row[0], fill=ink, font=font)
        for k, cell in enumerate(row[1:]):
            draw.text((pad + 240 + 130 * k, y), cell, fill=ink, font=font, anchor="ra")
        y += line
    for text in LEGEND:
        draw.text((pad, y), text, fill=ink, font=small)
        y += 20
    return sheet


def models_hint(engine: str, why: str) -> str:
    if engine == "diffusion":
        return "engine: diffusion (SD1.5 + IP-Adapter + kv replacement; its models are on this machine)"
    return (f"engine: patch, weight-free; {why}.\n"
            "For the diffusion engine, download its models once (about 5 GB; afterwards everything runs offline):\n"
            "    .venv/bin/python -m backend download-models\n"
            "then run scripts/demo again: it picks the diffusion engine when the models are there "
            "(choose one with --engine patch or --engine diffusion).")


def main(args) -> int:
    """The `demo` command (see backend/cli/tools.py for its arguments)."""
    from tqdm import tqdm

    _, why = engines.resolve(args.engine, args.base, args.ip_adapter)
    print(f"demo: {args.variants} variants of {args.texture}; {why}", file=sys.stderr)  # before the wait
    bar = tqdm(desc="generating", unit="step", file=sys.stderr, disable=None)

    def on_step(step, total, preview):
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        result = run_demo(args.out, texture=args.texture, variants=args.variants, seed=args.seed,
                          size=args.size, engine=args.engine, balance=args.balance, steps=args.steps,
                          base=args.base, ip_adapter=args.ip_adapter, on_step=on_step)
    finally:
        bar.close()
    print("\n".join(metrics_lines(result.metrics, result.reference_metrics)))
    print()
    for path in result.paths:
        print(path)
    print()
    print(f"contact sheet: {result.folder / 'contact_sheet.png'}")
    print(models_hint(result.engine, result.why))
    return 0
