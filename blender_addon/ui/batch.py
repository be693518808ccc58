"""The Generate for Selected part of the panel: its buttons, the way to this material's newest result set,
and the last batch's outcome per material."""

import textwrap

from ..connection import batch


def draw_batch(layout, view) -> None:
    """Generate for Selected, the way to this material's newest result set, and the last batch per material."""
    if not view.session.busy:
        row = layout.row(align=True)
        row.operator("texture_variants.generate_selected", icon="MATERIAL")
        row.operator("texture_variants.generate_all", icon="MATERIAL_DATA")  # asks first: count and time
    current = view.settings.current
    if view.material is not None and len(view.material.texture_variants.history) and current.material != view.material:
        layout.operator("texture_variants.use_result_set", text=f"Show the Variants of {view.material.name}",
                        icon="IMAGE_DATA").index = 0
    outcomes = batch.last_batch
    if not outcomes:
        return
    header, body = layout.panel("texture_variants_batch", default_closed=False)
    header.label(text=f"Last Batch: {sum(ok for _, ok, _ in outcomes)} of {len(outcomes)} materials")
    if body:
        for name, ok, text in outcomes:
            for i, line in enumerate(textwrap.wrap(f"{name}: {text}", 64)):
                body.label(text=line, icon=("CHECKMARK" if ok else "ERROR") if i == 0 else "BLANK1")
