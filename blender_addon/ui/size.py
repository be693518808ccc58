"""The panel's size rows (docs/guide/blender.md, "Size" and "Upscale"): the Size setting with the
exact W×H that Generate will make and why it differs from the source (capped, rounded, a huge
source downsampled on export), and the Upscale buttons of a picked or applied variant."""

from .. import panel_rules
from ..pixels import sizing


def draw_size(col, view, states: dict) -> None:
    settings = view.settings
    row = col.row(align=True)  # one Size: the mode, the pixels when Fixed, and what comes out
    row.prop(settings, "size_mode", text="Size")
    if states.get("size", panel_rules.SHOWN) != panel_rules.HIDDEN:
        row.prop(settings, "size", text="")
    if view.image is not None:
        plan = sizing.size_plan(settings, view.image)
        col.label(text=f"Makes {plan.width}×{plan.height}", icon="IMAGE_PLANE")
        for note in plan.notes:
            col.label(text=note, icon="INFO" if plan.export else "ERROR")


def draw_upscale(layout, view, picked, applied: bool) -> None:
    """×2 and ×4 of the picked variant (`picked`, or None), and of the applied one when `applied`."""
    if view.session.busy:
        return
    for of, image, text in (("PICKED", picked.image if picked else None, "Upscale Picked"),
                            ("APPLIED", None, "Upscale Applied")):
        if (of == "APPLIED" and not applied) or (of == "PICKED" and image is None):
            continue
        row = layout.row(align=True)
        row.label(text=text, icon="FULLSCREEN_ENTER")
        for factor in ("2", "4"):
            op = row.operator("texture_variants.upscale", text=f"×{factor}")
            op.factor, op.of = factor, of
