"""Restyle operators (docs/guide/blender.md, "In Blender", Restyle section):

    texture_variants.restyle           restyle the material's image texture by the panel's prompt
    texture_variants.new_mask          make a blank (black) mask image the texture's size, to paint white on
    texture_variants.add_mask_point    add a Segment Anything point at the Image Editor's 2D cursor
    texture_variants.clear_mask_points forget the points

A restyle runs like Generate Variant (same job folder, progress, Cancel); its results join the
listed variants, and Apply / Bake / Revert work on them the same way.
"""

import bpy
from bpy.props import BoolProperty, FloatVectorProperty

from .. import prefs
from ..connection import job as jobs
from ..errors import UserError, reports_errors
from ..material import map_io, target, texture_io, tile_set
from .generate import JobOperator, _redraw, timeout_property


def restyle_target(context):
    """(material, node, what a restyle reads): the texture the material shows now (an applied variant too)."""
    material, node, source = target.resolve(context)
    tile_set.check_off(material, "Restyle")
    return material, node, node.image or source


def restyle_input(context):
    return restyle_target(context)[2]


def _mask_file(settings, image, job_dir):
    """The painted mask written into the job folder (at its own size: the backend fits it to the
    texture), after the checks the backend would make later."""
    mask = settings.mask_image
    if mask is None:
        raise UserError("no_mask", "Mask is Painted Mask, but no mask image is chosen",
                        "click New Mask and paint white where to restyle, or pick an image")
    (w, h), (mw, mh) = image.size, mask.size
    if not (mw and mh) or abs((mw / mh) / (w / h) - 1.0) > 0.01:
        raise UserError("bad_mask", f"The mask '{mask.name}' is {mw}x{mh} px, the texture {w}x{h} px",
                        "use a mask with the texture's aspect ratio (New Mask makes one)")
    return str(texture_io.export_reference(mask, job_dir, role="mask")[0])


class TEXTURE_VARIANTS_OT_restyle(JobOperator, bpy.types.Operator):
    """Restyle the material's image texture by the prompt, keeping its structure where the mask says"""

    bl_idname = "texture_variants.restyle"
    bl_label = "Restyle"
    bl_options = {"REGISTER", "UNDO"}

    timeout: timeout_property()

    request = "restyle"
    append_results = True

    def _target(self, context):
        return restyle_target(context)

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        if not settings.restyle_prompt.strip():
            raise UserError("no_prompt", "Restyle needs a prompt", "type the new look, e.g. \"mossy bricks\"")
        values = {name: getattr(settings, name) for name in (*jobs.RESTYLE_SETTINGS, "mask_mode")}
        values["size"] = plan.size
        if settings.mask_source == "image":
            params = jobs.restyle_params(values, seed, mask=_mask_file(settings, image, job_dir))
        elif settings.mask_source == "points":
            if not len(settings.mask_points):
                raise UserError("no_points", "Mask is Points, but no point is placed",
                                "place the Image Editor's 2D cursor on the part to select, then click Add Point")
            points = [(p.u, p.v, p.negative) for p in settings.mask_points]
            size = plan.export or tuple(image.size)  # the input's pixels as exported
            params = jobs.restyle_params(values, seed, points=jobs.points_in_pixels(points, *size))
            if prefs.control_model("sam", context):
                params["sam"] = prefs.control_model("sam", context)
        else:
            params = jobs.restyle_params(values, seed)
        params["preview_every"] = 0 if bpy.app.background else 2  # as Generate's
        return params

    def _maps(self, material, node, job_dir) -> dict:
        return map_io.export_chosen(material, node, job_dir, shown=True)  # the applied variant's maps too


class TEXTURE_VARIANTS_OT_new_mask(bpy.types.Operator):
    """Make a black mask image the size of the texture, to paint white where selected (Image Editor, Paint)"""

    bl_idname = "texture_variants.new_mask"
    bl_label = "New Mask"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        image = restyle_input(context)
        width, height = image.size
        mask = bpy.data.images.new(f"{image.name} mask", width, height, alpha=False)
        mask.generated_color = (0.0, 0.0, 0.0, 1.0)
        mask.colorspace_settings.name = "Non-Color"
        settings = context.scene.texture_variants
        settings.mask_image, settings.mask_source = mask, "image"
        for window in context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "IMAGE_EDITOR":
                    area.spaces.active.image = mask
                    area.spaces.active.ui_mode = "PAINT"
        self.report({"INFO"}, f"{mask.name}: paint white where to restyle (Image Editor, Paint mode)")
        return {"FINISHED"}


def _cursor(context, image) -> tuple[float, float]:
    """The 2D cursor of an Image Editor showing `image` (else of any Image Editor), in 0-1 image coordinates."""
    editors = [area.spaces.active for window in context.window_manager.windows for area in window.screen.areas
               if area.type == "IMAGE_EDITOR"]
    editors.sort(key=lambda space: space.image != image)
    if not editors:
        raise UserError("no_image_editor", "No Image Editor is open to place the point in",
                        "open the texture in an Image Editor, put the 2D cursor on the part to select "
                        "(Shift + right-click), then click Add Point")
    space = editors[0]
    x, y = space.cursor_location
    if space.uv_editor.show_pixel_coords:  # then the cursor is in pixels of the shown image
        width, height = (space.image.size if space.image is not None else image.size)
        x, y = x / max(width, 1), y / max(height, 1)
    return x, y


class TEXTURE_VARIANTS_OT_add_mask_point(bpy.types.Operator):
    """Add a Segment Anything point at the Image Editor's 2D cursor (Shift + right-click places it)"""

    bl_idname = "texture_variants.add_mask_point"
    bl_label = "Add Point"
    bl_options = {"REGISTER", "UNDO"}

    negative: BoolProperty(name="Exclude", default=False, description="Exclude what the point marks")
    location: FloatVectorProperty(
        name="Location", size=2, default=(-1.0, -1.0),
        description="Scripts: the point in 0-1 image coordinates (from the bottom-left); (-1, -1) = the 2D cursor")

    @reports_errors()
    def execute(self, context):
        image = restyle_input(context)
        u, v = self.location if min(self.location) >= 0 else _cursor(context, image)
        if not (0.0 <= u <= 1.0 and 0.0 <= v <= 1.0):
            raise UserError("point_outside", f"The 2D cursor ({u:.2f}, {v:.2f}) is outside the image",
                            "put the 2D cursor on the texture itself (Shift + right-click in the Image Editor)")
        settings = context.scene.texture_variants
        point = settings.mask_points.add()
        point.u, point.v, point.negative = u, v, self.negative
        settings.mask_source = "points"
        _redraw(context)
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_clear_mask_points(bpy.types.Operator):
    """Forget the Segment Anything points"""

    bl_idname = "texture_variants.clear_mask_points"
    bl_label = "Clear Points"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.texture_variants.mask_points.clear()
        _redraw(context)
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_restyle, TEXTURE_VARIANTS_OT_new_mask, TEXTURE_VARIANTS_OT_add_mask_point,
           TEXTURE_VARIANTS_OT_clear_mask_points)
