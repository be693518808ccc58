"""The panel's History section: the material's earlier result sets, newest first."""

from ..material.results import HISTORY_LIMIT


def draw_history(layout, view) -> None:
    """The material's earlier result sets, newest first, to make one current again."""
    if view.material is None:
        return
    history = view.material.texture_variants.history
    header, body = layout.panel("texture_variants_history", default_closed=True)
    header.label(text=f"History ({len(history)})")
    if not body:
        return
    body.label(text=f"The last {HISTORY_LIMIT} result sets of this material are kept")
    for index, entry in enumerate(history):
        row = body.row(align=True)
        first = entry.variants[0].image if len(entry.variants) else None
        if first is not None and first.preview:
            row.label(text=entry.label(), icon_value=first.preview.icon_id)
        else:
            row.label(text=entry.label(), icon="IMAGE_DATA")
        row.operator("texture_variants.use_result_set", text="Use").index = index
