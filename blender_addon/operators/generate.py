"""The operators: a public scripting API (documented in the docs/guide/blender.md, "In Blender").

    texture_variants.generate       make variants of the active material's image texture
    texture_variants.cancel         stop the running generation
    texture_variants.make_guide     a structure guide from the texture's edges, to paint over
    texture_variants.tile_preview   show the picked variant tiled 3x3 in an Image Editor
    texture_variants.pick_node      choose the material's Image Texture node to work on
    texture_variants.use_result_set make an earlier result set of the material the current one
    texture_variants.clean_up_jobs  delete finished job folders past the age and size limits
(apply_variant, revert and bake are in operators/apply.py.)

Every operator checks everything before changing anything, so an error leaves the material as it
was; the report says what went wrong and what to do.
"""

import shutil

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty

from .. import paths, prefs
from ..connection import job as jobs
from ..connection import session
from ..errors import UserError, cancelled, in_blender_terms, reports_errors
from ..material import map_io, pictures, results, storage, target, texture_io
from ..pixels import sizing


def _settings(context):
    return context.scene.texture_variants


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in {"NODE_EDITOR", "VIEW_3D", "IMAGE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


def _request(context, settings, seed: int, size: list[int], guide=None) -> dict:
    names = (*jobs.REQUEST_SETTINGS, *jobs.STYLE_SETTINGS, *jobs.PROMPT_SETTINGS, *jobs.SKETCH_SETTINGS, "sampler")
    values = {name: getattr(settings, name) for name in names}
    values["size"] = size  # [width, height] (sizing.SizePlan.size)
    values["content_encoder"] = prefs.content_encoder(context)
    params = jobs.request_params(values, seed, guide)
    model = prefs.control_model(settings.sketch_mode, context) if guide else None
    if model:  # the Structure Guide's model from the preferences (docs/guide/blender.md)
        params.setdefault("extra", {})[settings.sketch_mode] = model
    lora = prefs.control_model("fast_lora", context) if params.get("sampler") == "fast" else None
    if lora:
        params.setdefault("extra", {})["fast_lora"] = lora
    # Live previews are for people watching; scripts and farms skip their cost.
    params["preview_every"] = 0 if bpy.app.background else 2
    return params


def timeout_property():
    return FloatProperty(
        name="Timeout", default=0.0, min=0.0, unit="TIME_ABSOLUTE",
        description="Scripts and background mode: cancel the job after this many seconds (0 = no limit)",
    )


class JobOperator:
    """A backend job run from the panel (Generate Variant, Restyle): checked and sent, then polled by
    a timer in the UI or run to the end from scripts; its results become the current result set."""

    request = "generate"  # the backend request this operator sends
    append_results = False  # a generate's variants replace the current set; a restyle's join it
    _timer = None
    _made_for = None
    _seed = 0
    _job_dir = ""

    @classmethod
    def poll(cls, context):
        return not session.shared().busy

    def _target(self, context):
        """(material, node, the texture the job reads): variants are made of the original, even while
        one is applied."""
        return target.resolve(context)

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        """The request's parameters from the panel (may write further inputs into `job_dir`)."""
        guide = None
        if settings.sketch is not None:
            guide = texture_io.export_reference(settings.sketch, job_dir, role="guide")[0]
        return _request(context, settings, seed, plan.size, guide)

    def _maps(self, material, node, job_dir) -> dict:
        """The material's maps sent with the texture: {map name: (its node's name, the file in `job_dir`)}."""
        return {}

    def _size_plan(self, settings, image):
        """What is made of `image`: its size and the notes for the panel (the panel's Size settings)."""
        return sizing.size_plan(settings, image)

    def _submit(self, context, in_thread=False):
        """Check everything, export the texture, send the job. Changes no bpy data."""
        settings = _settings(context)
        material, node, image = self._target(context)
        config = prefs.backend_config(context)
        root = str(prefs.backend_root())
        storage.clean_up()  # the automatic age and size limits, before a new folder adds to them
        plan = self._size_plan(settings, image)
        # One folder per job: the reference copy goes in now, the backend writes the variants beside it.
        job_dir = paths.new_job_folder(storage.jobs_root())
        try:
            reference, encoding = texture_io.export_reference(image, job_dir)
            seed = jobs.new_seed() if settings.randomize_seed else settings.seed
            params = self._request_params(context, settings, image, job_dir, seed, plan)
            maps = self._maps(material, node, job_dir)
            params |= map_io.request_fields(maps)
            job = session.shared().submit(config, root, str(reference), str(job_dir), params, in_thread=in_thread,
                                          request=self.request)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # our own folder, holding only the reference copy
            raise
        library = material.library.filepath if material.library else None
        self._made_for = {"material": (material.name, library), "node_name": node.name, "source": image.name,
                          "encoding": encoding, "plan": plan, "maps": {n: node_name for n, (node_name, _) in maps.items()}}
        self._seed, self._job_dir = seed, str(job_dir)
        return job

    def _finish(self, context, job):
        if job.state == jobs.DONE:
            made_for = dict(self._made_for, source=bpy.data.images.get(self._made_for["source"]),
                            material=bpy.data.materials.get(self._made_for["material"]))
            if made_for["material"] is None:
                shutil.rmtree(self._job_dir, ignore_errors=True)
                self.report({"ERROR"}, str(UserError("no_material", "The material was deleted while the job ran",
                                                     "select the object again and click Generate Variant")))
                return {"CANCELLED"}
            return self._use_results(context, job, made_for)
        shutil.rmtree(self._job_dir, ignore_errors=True)  # nothing in it is used by the .blend
        error = cancelled() if job.state == jobs.CANCELLED else in_blender_terms(UserError.from_event(job.error or {}))
        self.report({"ERROR"}, str(error))
        return {"CANCELLED"}

    def _use_results(self, context, job, made_for: dict) -> set:
        """The finished job's files into the .blend (the current result set)."""
        settings = _settings(context)
        settings.seed = self._seed  # shown in the panel, so a good result can be made again
        n = results.load_job(settings, job, made_for, append=self.append_results)
        notes = "".join(f" ({note})" for note in made_for["plan"].notes)
        self.report({"INFO"}, f"{n} variant{'s' if n != 1 else ''} ready: pick one and click Apply{notes}")
        return {"FINISHED"}

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
                pictures.update_live_preview(job)
            if changed:
                _redraw(context)
            if job.finished:
                context.window_manager.event_timer_remove(self._timer)
                _redraw(context)
                return self._finish(context, job)
        return {"PASS_THROUGH"}


class TEXTURE_VARIANTS_OT_generate(JobOperator, bpy.types.Operator):
    """Make new tileable variants of the active material's image texture with the backend"""

    bl_idname = "texture_variants.generate"
    bl_label = "Generate Variant"
    bl_options = {"REGISTER", "UNDO"}

    timeout: timeout_property()

    def _maps(self, material, node, job_dir) -> dict:
        return map_io.export_chosen(material, node, job_dir)


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
        _material, _node, image = target.resolve(context)
        guide = pictures.guide_from_edges(image, f"{image.name} guide")
        _settings(context).sketch = guide
        self.report({"INFO"}, f"{guide.name}: paint the lines you want (white on black) in the Image Editor, "
                    "then Generate")
        return {"FINISHED"}


def variant_index():
    """The `index` property of the operators that act on one variant of the current set."""
    return IntProperty(name="Variant", default=-1, min=-1, description="Which result; -1 = the picked one")


def picked(context, index: int = -1):
    """The current set's variant `index` (-1: the picked one); UserError when there is none."""
    settings = _settings(context)
    if index >= 0:
        settings.results_index = index
    item = settings.picked()
    if item is None:
        raise UserError("no_variant", "No variant is picked", "click Generate Variant, then pick a result")
    return item


class TEXTURE_VARIANTS_OT_tile_preview(bpy.types.Operator):
    """Show the picked variant repeated 3x3 in an Image Editor, to check its seams"""

    bl_idname = "texture_variants.tile_preview"
    bl_label = "Tile Preview"
    bl_options = {"REGISTER", "UNDO"}
    index: variant_index()

    @reports_errors()
    def execute(self, context):
        item = picked(context, self.index)
        tiled = pictures.tiled_copy(item.image, 3)
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


def _image_node_items(self, context):
    material = context.active_object.active_material if context and context.active_object else None
    nodes = target.image_nodes(material) if material is not None and material.use_nodes else []
    items = [("", "Auto", "The node feeding Base Color, else the active Image Texture node")]
    return items + [(n.name, n.name, n.image.name if n.image else "(no image)") for n in nodes]


class TEXTURE_VARIANTS_OT_pick_node(bpy.types.Operator):
    """Choose the Image Texture node of this material to make variants of (stored with the material)"""

    bl_idname = "texture_variants.pick_node"
    bl_label = "Image Node"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "node"

    node: EnumProperty(name="Node", items=_image_node_items)

    @reports_errors()
    def execute(self, context):
        material = target.active_material(context)
        target.check_editable(material)
        material.texture_variants.image_node = self.node
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_use_result_set(bpy.types.Operator):
    """Make an earlier result set of this material the current one (to pick and apply from)"""

    bl_idname = "texture_variants.use_result_set"
    bl_label = "Use Result Set"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Result Set", default=0, min=0, description="0 = the newest")

    @reports_errors()
    def execute(self, context):
        material = target.active_material(context)
        current = results.use_history(_settings(context), material, self.index)
        self.report({"INFO"}, f"Using {current.label()}")
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_clean_up_jobs(bpy.types.Operator):
    """Delete finished job folders older than the age limit (and the oldest past the size limit); folders the
    open .blend still reads from are kept"""

    bl_idname = "texture_variants.clean_up_jobs"
    bl_label = "Clean Up Jobs"
    bl_options = {"REGISTER"}

    max_age_days: FloatProperty(name="Older Than (days)", default=-1.0, min=-1.0,
                                description="-1 = the age limit in the preferences")

    @reports_errors()
    def execute(self, context):
        removed = storage.clean_up(None if self.max_age_days < 0 else self.max_age_days)
        self.report({"INFO"}, f"Removed {len(removed)} finished job folder{'s' if len(removed) != 1 else ''}")
        return {"FINISHED"}


CLASSES = (
    TEXTURE_VARIANTS_OT_generate,
    TEXTURE_VARIANTS_OT_cancel,
    TEXTURE_VARIANTS_OT_make_guide,
    TEXTURE_VARIANTS_OT_tile_preview,
    TEXTURE_VARIANTS_OT_pick_node,
    TEXTURE_VARIANTS_OT_use_result_set,
    TEXTURE_VARIANTS_OT_clean_up_jobs,
)
