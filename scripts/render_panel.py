"""The README's picture of the Variants panel, drawn from the add-on's real panel layout.

    scripts/render_panel [OUT.png]        (default docs/images/panel.png)

Two halves. Inside headless Blender (the bpy wheel; scripts/render_panel runs it) the extension is
installed from its zip, a brick material with a roughness map gets four patch variants through the
operators, and `ui.panel.draw_variants_panel` draws into a recording layout: every label, property
(with its label and current value), button, list of thumbnails and section, as JSON. Outside
Blender, Pillow draws that JSON in the colours of Blender's default theme. So the picture shows the
panel's real wording, order and report cards, not a mock-up kept by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import bpy
except ImportError:  # the drawing half, in the project's venv
    bpy = None


class Recorder:
    """Stands in for bpy.types.UILayout: records what is drawn as lines of items (a row's items side
    by side), with the nesting depth of sections and boxes."""

    def __init__(self, lines: list, depth: int = 0, row: list | None = None, active: bool = True):
        self._lines, self._depth, self._row, self._active = lines, depth, row, active

    def __setattr__(self, name, value):
        if name == "active" or name == "enabled":
            object.__setattr__(self, "_active", self._active and bool(value))
        else:
            object.__setattr__(self, name, value)

    def _add(self, item: dict) -> None:
        item["active"] = self._active
        if self._row is not None:
            self._row.append(item)
        else:
            self._lines.append({"depth": self._depth, "items": [item]})

    def row(self, **_):
        items: list = []
        self._lines.append({"depth": self._depth, "items": items})
        return Recorder(self._lines, self._depth, items, self._active)

    def column(self, **_):
        return Recorder(self._lines, self._depth, None, self._active)

    def box(self):
        return Recorder(self._lines, self._depth + 1, None, self._active)

    def panel(self, idname, default_closed=False):
        header = Recorder(self._lines, self._depth, None, self._active)
        self._lines.append({"depth": self._depth, "section": True, "items": []})
        object.__setattr__(header, "_row", self._lines[-1]["items"])
        return header, Recorder(self._lines, self._depth + 1, None, self._active)

    def separator(self, **_):
        self._lines.append({"depth": self._depth, "items": [], "gap": True})

    def label(self, text="", icon="NONE", icon_value=0):
        self._add({"kind": "label", "text": text, "icon": icon})

    def progress(self, factor=0.0, type="BAR", text=""):  # noqa: A002 (Blender's keyword)
        self._add({"kind": "progress", "text": text, "factor": factor})

    def prop(self, data, property, text=None, slider=False, toggle=False, icon="NONE", expand=False, **_):  # noqa: A002
        rna = data.bl_rna.properties[property]
        value = getattr(data, property)
        label = rna.name if text is None else text
        if rna.type == "BOOLEAN":
            self._add({"kind": "toggle" if toggle else "check", "text": label, "on": bool(value)})
            return
        if rna.type == "ENUM":
            value = next((i.name for i in rna.enum_items if i.identifier == value), str(value))
        elif rna.type == "POINTER":
            value = value.name if value is not None else ""
        elif rna.type == "FLOAT":
            value = f"{value:.3f}" if rna.subtype == "FACTOR" or slider else f"{value:g}"
        elif rna.type == "INT":
            value = f"{value} px" if rna.subtype == "PIXEL" else str(value)
        self._add({"kind": "slider" if slider else "field", "text": label, "value": str(value),
                   "factor": float(getattr(data, property)) if slider else None, "enum": rna.type == "ENUM"})

    def prop_enum(self, data, property, value, text="", icon="NONE"):  # noqa: A002
        self._add({"kind": "check", "text": text, "on": value in getattr(data, property)})

    def operator(self, operator, text=None, icon="NONE", depress=False, **_):
        category, name = operator.split(".")
        label = getattr(getattr(bpy.ops, category), name).get_rna_type().name if text is None else text
        self._add({"kind": "button", "text": label, "icon": icon, "depress": depress})
        return _Properties()

    def operator_menu_enum(self, operator, property, text="", icon="NONE"):  # noqa: A002
        self._add({"kind": "field", "text": "", "value": text, "enum": True})

    def template_list(self, listtype, list_id, dataptr, propname, active_dataptr, active_propname, **_):
        from bl_ext.user_default.texture_variants import panel_rules

        active = getattr(active_dataptr, active_propname)
        cells = [{"image": bpy.path.abspath(v.image.filepath), "marks": panel_rules.card_marks(json.loads(v.card or "{}")),
                  "picked": i == active} for i, v in enumerate(getattr(dataptr, propname))]
        self._add({"kind": "grid", "cells": cells})

    def template_icon(self, icon_value=0, scale=1.0):
        pass  # the picked variant's preview: the grid above shows it


class _Properties:
    def __setattr__(self, name, value):
        pass


def record(zip_path: str, workdir: str, out_json: str) -> None:
    """Inside Blender: the scene, four variants, and the panel recorded."""
    import shutil

    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    maps = Path(workdir) / "project" / "maps"
    maps.mkdir(parents=True)
    colour = bpy.data.images.load(shutil.copy(Path(workdir) / "brick.png", maps))
    rough = bpy.data.images.load(shutil.copy(Path(workdir) / "brick_rough.png", maps))
    rough.colorspace_settings.name = "Non-Color"
    bpy.ops.mesh.primitive_plane_add(size=2)
    material = bpy.data.materials.new("Brick Wall")
    material.use_nodes = True
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    for image, socket in ((colour, "Base Color"), (rough, "Roughness")):
        node = tree.nodes.new("ShaderNodeTexImage")
        node.image = image
        tree.links.new(node.outputs["Color"], bsdf.inputs[socket])
    bpy.context.active_object.data.materials.append(material)
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(workdir) / "project" / "wall.blend"))
    settings = bpy.context.scene.texture_variants
    settings.engine, settings.variants, settings.randomize_seed, settings.seed = "patch", 4, False, 21
    bpy.ops.texture_variants.generate()
    settings.current.index = 1
    from bl_ext.user_default.texture_variants.ui import panel

    lines: list = []
    panel.draw_variants_panel(Recorder(lines), bpy.context)
    Path(out_json).write_text(json.dumps(lines, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- drawing (Pillow, outside Blender)

WIDTH, LINE, PAD, INDENT = 460, 26, 10, 10
BG, BOX, WIDGET, WIDGET_ON, TEXT, DIM, ACCENT = (48, 48, 48), (40, 40, 40), (84, 84, 84), (71, 114, 179), \
    (230, 230, 230), (140, 140, 140), (71, 114, 179)
THUMB = 96


def _font(size: int):
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/Library/Fonts/Arial Unicode.ttf"):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _height(line: dict) -> int:
    if line.get("gap"):
        return 6
    if any(item["kind"] == "grid" for item in line["items"]):
        return THUMB + 26
    return LINE


def draw(lines: list, out_png: Path) -> None:
    from PIL import Image, ImageDraw

    font, small = _font(13), _font(11)
    lines = [line for line in lines if line["items"] or line.get("gap") or line.get("section")]
    height = PAD * 2 + 30 + sum(_height(line) for line in lines)
    picture = Image.new("RGB", (WIDTH, height), BG)
    pen = ImageDraw.Draw(picture)
    pen.rectangle((0, 0, WIDTH, 28), fill=(61, 61, 61))
    pen.text((PAD, 6), "Variants", font=font, fill=TEXT)
    y = 30 + PAD
    for line in lines:
        x0 = PAD + INDENT * line["depth"]
        if line["depth"]:
            pen.rectangle((x0 - 4, y, WIDTH - PAD + 2, y + _height(line)), fill=BOX)
        if line.get("section"):
            pen.text((x0, y + 5), "▾ " + " ".join(i.get("text", "") for i in line["items"]), font=font, fill=TEXT)
            y += LINE
            continue
        items = line["items"]
        weights = [3 if item["kind"] == "label" and len(items) > 1 else 1 for item in items]  # text first
        x = x0
        for item, weight in zip(items, weights, strict=True):
            width = (WIDTH - PAD - x0) * weight / sum(weights)
            _draw_item(pen, picture, item, x, y, width - 4, font, small)
            x += width
        y += _height(line)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out_png, optimize=True)


def _draw_item(pen, picture, item, x, y, w, font, small) -> None:
    from PIL import Image

    colour = TEXT if item.get("active", True) else DIM
    box = (x, y + 3, x + w, y + LINE - 3)
    kind = item["kind"]
    if kind == "label":  # cut to its width, as Blender does
        text = item["text"]
        while text and pen.textlength(text, font=font) > w - 4:
            text = text[:-2] + "…"
        pen.text((x + 2, y + 5), text, font=font, fill=colour)
    elif kind in ("field", "slider"):
        label = item["text"]
        value_x = x
        if label:
            pen.text((x + 2, y + 5), label, font=font, fill=colour)
            value_x = x + min(w * 0.45, pen.textlength(label, font=font) + 12)
        pen.rounded_rectangle((value_x, y + 3, x + w, y + LINE - 3), radius=4, fill=WIDGET)
        if kind == "slider" and item.get("factor") is not None:
            fill = value_x + (x + w - value_x) * max(0.0, min(1.0, item["factor"]))
            pen.rounded_rectangle((value_x, y + 3, fill, y + LINE - 3), radius=4, fill=WIDGET_ON)
        pen.text((value_x + 6, y + 6), item["value"] + ("  ▾" if item.get("enum") else ""), font=small, fill=colour)
    elif kind in ("check", "toggle"):
        mark = (x + 2, y + 7, x + 14, y + 19)
        pen.rounded_rectangle(mark, radius=3, fill=ACCENT if item["on"] else WIDGET)
        if item["on"]:
            pen.text((x + 3, y + 5), "✓", font=small, fill=TEXT)
        pen.text((x + 20, y + 5), item["text"], font=font, fill=colour)
    elif kind == "button":
        pen.rounded_rectangle(box, radius=4, fill=WIDGET_ON if item.get("depress") else WIDGET)
        text = item["text"] or "×"
        pen.text((x + (w - pen.textlength(text, font=small)) / 2, y + 6), text, font=small, fill=colour)
    elif kind == "progress":
        pen.rounded_rectangle(box, radius=4, fill=WIDGET)
        pen.text((x + 6, y + 6), item["text"], font=small, fill=colour)
    elif kind == "grid":
        for k, cell in enumerate(item["cells"][:4]):
            cx = x + k * (THUMB + 12)
            try:
                with Image.open(cell["image"]) as image:
                    thumb = image.convert("RGB").resize((THUMB, THUMB))
                picture.paste(thumb, (int(cx), int(y + 2)))
            except OSError:
                pen.rectangle((cx, y + 2, cx + THUMB, y + 2 + THUMB), fill=WIDGET)
            if cell["picked"]:
                pen.rectangle((cx - 2, y, cx + THUMB + 2, y + THUMB + 4), outline=ACCENT, width=2)
            pen.text((cx + 4, y + THUMB + 6), cell["marks"], font=small, fill=TEXT)


def main(argv: list[str]) -> int:
    if bpy is not None:  # inside Blender: record
        argv = argv[argv.index("--") + 1:] if "--" in argv else argv
        record(*argv[:3])
        return 0
    lines = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    draw(lines, Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
