"""The operators: a public scripting API (documented in the README, section "In Blender").

    texture_variants.generate       make variants of the active material's image texture
    texture_variants.cancel         stop the running generation
    texture_variants.make_guide     a structure guide from the texture's edges, to paint over
    texture_variants.apply_variant  put the picked variant into the material's Image Texture node
    texture_variants.revert         put the original image back
    texture_variants.bake           write the applied variant as a PNG next to the .blend
    texture_variants.tile_preview   show the picked variant tiled 3x3 in an Image Editor

Every operator checks everything before changing anything, so an error leaves the material as it
was; the report says what went wrong and what to do.
"""

import json
import os
import shutil

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty

from . import job as jobs
from . import material_target, paths, preferences, session, texture_io
from .errors import UserError, cancelled, reports_errors

PREVIEW_IMAGE = ".Texture Variants Preview"


def _settings(context):
    return context.scene.texture_variants


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in {"NODE_EDITOR", "VIEW_3D", "IMAGE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


def _update_live_preview(job) -> None:
    """Show the engine's latest intermediate image in the panel."""
    if not job.preview or not os.path.isfile(job.preview):
        return
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(job.preview, check_existing=False)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = job.preview
        image.reload()
    image.preview_ensure().reload()


def _add_results(context, job, source_image) -> int:
    """Load the finished job's variants and list them in the panel (the first one picked)."""
    settings = _settings(context)
    settings.results.clear()
    stem = paths.safe_stem(source_image.name if source_image else "texture")
    for entry in job.files:
        params = entry.get("parameters") or {}
        if isinstance(params, str):  # the PNG's parameters text, as JSON
            params = json.loads(params)
        seed = int(params.get("seed", 0))
        image = texture_io.load_variant(entry["path"], f"{stem} variant s{seed}", source_image)
        if not bpy.app.background:
            image.preview_ensure()
        item = settings.results.add()
        item.name, item.image, item.path = image.name, image, entry["path"]
        item.seed, item.engine = seed, str(params.get("engine", ""))
    settings.results_index = 0
    return len(job.files)


class TEXTURE_VARIANTS_OT_generate(bpy.types.Operator):
    """Make new tileable variants of the active material's image texture with the backend"""

    bl_idname = "texture_variants.generate"
    bl_label = "Generate Variant"
    bl_options = {"REGISTER", "UNDO"}

    timeout: FloatProperty(
        name="Timeout", default=0.0, min=0.0, unit="TIME_ABSOLUTE",
        description="Scripts and background mode: cancel the job after this many seconds (0 = no limit)",
    )

    _timer = None
    _source_name = ""
    _seed = 0
    _job_dir = ""

    @classmethod
    def poll(cls, context):
        return not session.shared().busy

    def _submit(self, context, in_thread=False):
        """Check everything, export the texture, send the job. Changes no bpy data."""
        settings = _settings(context)
        _material, _node, image = material_target.resolve(context)
        config = preferences.backend_config(context)
        root = str(preferences.backend_root())
        # One folder per job: the reference copy goes in now, the backend writes the variants beside it.
        job_dir = paths.new_job_folder(preferences.user_folder("jobs"))
        try:
            reference = texture_io.export_reference(image, job_dir)
            guide = texture_io.export_reference(settings.sketch, job_dir, "guide") if settings.sketch else None
            seed = jobs.new_seed() if settings.randomize_seed else settings.seed
            names = (*jobs.REQUEST_SETTINGS, *jobs.STYLE_SETTINGS, *jobs.SKETCH_SETTINGS)
            params = jobs.request_params({name: getattr(settings, name) for name in names}, seed, guide)
            # Live previews are for people watching; scripts and farms skip their cost.
            params["preview_every"] = 0 if bpy.app.background else 2
            job = session.shared().submit(config, root, str(reference), str(job_dir), params, in_thread=in_thread)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # our own folder, holding only the reference copy
            raise
        self._source_name, self._seed, self._job_dir = image.name, seed, str(job_dir)
        return job

    def _finish(self, context, job):
        if job.state == jobs.DONE:
            _settings(context).seed = self._seed  # shown in the panel, so a good result can be made again
            n = _add_results(context, job, bpy.data.images.get(self._source_name))
            self.report({"INFO"}, f"{n} variant{'s' if n != 1 else ''} ready: pick one and click Apply")
            return {"FINISHED"}
        shutil.rmtree(self._job_dir, ignore_errors=True)  # nothing in it is used by the .blend
        error = cancelled() if job.state == jobs.CANCELLED else UserError.from_event(job.error or {})
        self.report({"ERROR"}, str(error))
        return {"CANCELLED"}

    @reports_errors()
    def execute(self, context):  # scripts, `blender -b` and render farms: runs to completion
        self._submit(context)
        return self._finish(context, session.shared().run_to_end(timeout=self.timeout or None))

    @reports_errors()
    def invoke(self, context, event):  # the UI: never blocks, a timer polls the backend
        self._submit(context, in_thread=True)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        _redraw(context)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        current = session.shared()
        job = current.job
        if job is None:  # the add-on was disabled meanwhile
            context.window_manager.event_timer_remove(self._timer)
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            current.cancel()
        if event.type == "TIMER":
            serial = job.preview_serial
            try:
                changed = current.pump()
            except Exception as e:  # the client reports a dead backend as an event; this is a bug guard
                job.apply({"type": "error", "id": job.id, "code": "backend_died", "message": str(e)})
                changed = True
            if job.preview_serial != serial:
                _update_live_preview(job)
            if changed:
                _redraw(context)
            if job.finished:
                context.window_manager.event_timer_remove(self._timer)
                _redraw(context)
                return self._finish(context, job)
        return {"PASS_THROUGH"}


class TEXTURE_VARIANTS_OT_cancel(bpy.types.Operator):
    """Stop the running generation (the material is not changed)"""

    bl_idname = "texture_variants.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return session.shared().busy

    def execute(self, context):
        session.shared().cancel()
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_make_guide(bpy.types.Operator):
    """Make a structure guide from the texture's edges: a new image to paint the wanted layout over"""

    bl_idname = "texture_variants.make_guide"
    bl_label = "Guide from Texture Edges"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        _material, _node, image = material_target.resolve(context)
        guide = texture_io.guide_from_edges(image, f"{image.name} guide")
        _settings(context).sketch = guide
        self.report({"INFO"}, f"{guide.name}: paint the lines you want (white on black) in the Image Editor, "
                    "then Generate")
        return {"FINISHED"}


def _picked(context, index: int):
    settings = _settings(context)
    if index >= 0:
        settings.results_index = index
    item = settings.picked()
    if item is None:
        raise UserError("no_variant", "No variant is picked", "click Generate Variant, then pick a result")
    return item


class TEXTURE_VARIANTS_OT_apply_variant(bpy.types.Operator):
    """Put the picked variant into the material's Image Texture node (Revert brings the original back)"""

    bl_idname = "texture_variants.apply_variant"
    bl_label = "Apply Variant"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Variant", default=-1, min=-1, description="Which result; -1 = the picked one")

    @reports_errors()
    def execute(self, context):
        material, node, _source = material_target.resolve(context)
        item = _picked(context, self.index)
        state = material.texture_variants
        if state.original_image is not None and state.node_name != node.name \
                and material.node_tree.nodes.get(state.node_name) is not None:
            raise UserError("applied_elsewhere", f"A variant is already applied to the node '{state.node_name}' "
                            f"of '{material.name}'", "click Revert to Original first, then apply to this node")
        if state.original_image is None or state.node_name != node.name:
            # Keep the original in the .blend even while no node uses it, so Revert can restore it.
            state.original_image, state.node_name = node.image, node.name
            state.original_had_fake_user = node.image.use_fake_user
            node.image.use_fake_user = True
        node.image = item.image
        self.report({"INFO"}, f"Applied {item.image.name} to {material.name}")
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_revert(bpy.types.Operator):
    """Put the original image back into the material's Image Texture node"""

    bl_idname = "texture_variants.revert"
    bl_label = "Revert to Original"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors()
    def execute(self, context):
        material = material_target.active_material(context)
        state = material.texture_variants
        node = material.node_tree.nodes.get(state.node_name)
        if state.original_image is None or node is None or node.type != "TEX_IMAGE":
            raise UserError("no_variant", f"No variant is applied to '{material.name}'",
                            "nothing to revert; apply a variant first")
        original = state.original_image
        node.image = original
        original.use_fake_user = state.original_had_fake_user
        state.original_image, state.node_name = None, ""
        self.report({"INFO"}, f"Restored {original.name}")
        return {"FINISHED"}


def _write_baked(image, folder, target) -> None:
    """The image's file copied to `target`, or, painted or packed, Blender's pixels written there."""
    source = texture_io.original_file(image)
    if image.is_dirty or image.packed_file is not None or not source or not os.path.isfile(source):
        # Painted or packed: write Blender's pixels, leaving the variant's own file as it is.
        folder.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        texture_io.write_pixels_png(image, temp)
        paths.copy_new_file(temp, target)
        temp.unlink()
    else:
        paths.copy_new_file(source, target)


class TEXTURE_VARIANTS_OT_bake(bpy.types.Operator):
    """Write the applied variant as a PNG into a textures folder next to the .blend and use that file"""

    bl_idname = "texture_variants.bake"
    bl_label = "Bake Variant"
    bl_options = {"REGISTER", "UNDO"}

    pack: BoolProperty(name="Pack", default=False, description="Also pack the baked texture into the .blend")

    def invoke(self, context, event):
        self.pack = preferences.get(context).pack_on_bake
        return self.execute(context)

    @reports_errors()
    def execute(self, context):
        prefs = preferences.get(context)
        material = material_target.active_material(context)
        state = material.texture_variants
        node = material.node_tree.nodes.get(state.node_name)
        if state.original_image is None or node is None or node.image is None:
            raise UserError("no_variant", f"No variant is applied to '{material.name}'",
                            "pick a variant and click Apply, then Bake")
        image = node.image
        folder = paths.bake_folder(bpy.data.filepath, bpy.path.abspath(prefs.bake_folder))
        protected = tuple(p for p in (texture_io.original_file(state.original_image),) if p)
        target = paths.unique_target(folder, paths.safe_stem(image.name), protected=protected)
        try:
            _write_baked(image, folder, target)
        except OSError as e:
            raise UserError("bake_failed", f"Could not write the baked texture: {e}",
                            "choose a writable Bake Folder in the add-on preferences") from e
        image.filepath = bpy.path.relpath(str(target)) if bpy.data.filepath else str(target)
        if image.packed_file is not None:
            image.unpack(method="USE_ORIGINAL")  # the file now at image.filepath is the baked one
        image.reload()
        if self.pack:
            image.pack()
        self.report({"INFO"}, f"Baked {image.name} to {target}")
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_tile_preview(bpy.types.Operator):
    """Show the picked variant repeated 3x3 in an Image Editor, to check its seams"""

    bl_idname = "texture_variants.tile_preview"
    bl_label = "Tile Preview"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Variant", default=-1, min=-1, description="Which result; -1 = the picked one")

    @reports_errors()
    def execute(self, context):
        item = _picked(context, self.index)
        tiled = texture_io.tiled_copy(item.image, 3)
        shown = False
        for window in context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "IMAGE_EDITOR":
                    area.spaces.active.image = tiled
                    shown = True
                    break
        if not shown and not bpy.app.background and context.area is not None:
            # No Image Editor open: show it in a new window, as Render > View Render does.
            try:
                with context.temp_override(area=context.area):
                    bpy.ops.wm.window_new()
                area = context.window_manager.windows[-1].screen.areas[0]
                area.type = "IMAGE_EDITOR"
                area.spaces.active.image = tiled
            except RuntimeError:
                self.report({"INFO"}, f"Open an Image Editor and pick '{tiled.name}' to see it")
                return {"FINISHED"}
        self.report({"INFO"}, f"{tiled.name}: {tiled.size[0]}x{tiled.size[1]}")
        return {"FINISHED"}


CLASSES = (
    TEXTURE_VARIANTS_OT_generate,
    TEXTURE_VARIANTS_OT_cancel,
    TEXTURE_VARIANTS_OT_make_guide,
    TEXTURE_VARIANTS_OT_apply_variant,
    TEXTURE_VARIANTS_OT_revert,
    TEXTURE_VARIANTS_OT_bake,
    TEXTURE_VARIANTS_OT_tile_preview,
)
