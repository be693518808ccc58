"""Generate for Selected (docs/guide/blender.md, "In Blender", "Generate for Selected"):

    texture_variants.generate_selected   variants of the image textures of every selected object's
                                         materials, or (all_materials) of every material in the file

Each material's Image Texture node is found as Generate finds it (material.target), its texture is
exported into a job folder of its own as Generate exports it, and the jobs (one per material: the
panel's settings, a seed each) are written as a manifest and sent to the configured backend together
(connection.batch says why over the service protocol). Each material's variants become the newest result
set of its own history, so selecting an object with that material shows them for Apply. A material
without an image texture, or whose job failed, is reported by name and gets nothing; the others
still get their variants.
"""

import shutil
from pathlib import Path

import bpy
from bpy.props import BoolProperty

from .. import paths, prefs
from ..connection import batch as batch_job
from ..connection import job as jobs
from ..connection import session
from ..errors import UserError, cancelled, in_blender_terms, reports_errors
from ..material import map_io, results, storage, target, texture_io
from ..pixels import sizing
from . import generate
from .generate import JobOperator, timeout_property


def _materials(context, every: bool) -> list:
    """The materials to vary: the selected objects' (every slot, by object name), or every used one."""
    if every:
        found = sorted((m for m in bpy.data.materials if m.users and not getattr(m, "is_grease_pencil", False)),
                       key=lambda m: m.name)
        if not found:
            raise UserError("no_material", "The file has no material", "add a material with an Image Texture node")
        return found
    objects = sorted(context.selected_objects, key=lambda o: o.name)
    if not objects:
        raise UserError("no_object", "No object is selected", "select the objects whose materials to vary "
                        "(Shift-click in the viewport), or use All Materials")
    found = []
    for slot in (slot for obj in objects for slot in obj.material_slots):
        if slot.material is not None and slot.material not in found:
            found.append(slot.material)
    if not found:
        raise UserError("no_material", "None of the selected objects has a material",
                        "add a material with an Image Texture node in the Material Properties")
    return found


def _job_for(context, settings, material, folder: Path, seed: int) -> tuple[dict, dict]:
    """(the generate job, what its results are for) of one material, its texture exported into `folder`;
    UserError (and no folder) when the material has nothing to vary."""
    material, node, image = target.resolve_material(material)
    target.check_editable(material)  # linked data keeps no history to list the results in
    plan = sizing.size_plan(settings, image)
    folder.mkdir()
    try:
        reference, encoding = texture_io.export_reference(image, folder)
        maps = map_io.export_chosen(material, node, folder)  # the ticked maps travel as with Generate
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    params = generate._request(context, settings, seed, plan.size)
    params["preview_every"] = 0  # a batch shows no live preview
    params |= map_io.request_fields(maps)
    made_for = {"material": material.name, "node_name": node.name, "source": image.name, "encoding": encoding,
                "plan": plan, "maps": {name: node_name for name, (node_name, _) in maps.items()}}
    return {"input": str(reference), "output_dir": str(folder), **params}, made_for


def _outcome(settings, tracker, made_for: dict) -> tuple[str, bool, str]:
    """Load one finished job's variants into its material's history; (material, ok, what happened)."""
    name = made_for["material"]
    if tracker.state != jobs.DONE:
        shutil.rmtree(tracker.folder, ignore_errors=True)  # only the reference copy: nothing the .blend uses
        error = cancelled() if tracker.state == jobs.CANCELLED else \
            in_blender_terms(UserError.from_event(tracker.error or {}))
        return name, False, str(error)
    material = bpy.data.materials.get(name)
    if material is None:
        return name, False, "The material was deleted while the job ran"
    made_for = dict(made_for, material=material, source=bpy.data.images.get(made_for["source"]))
    try:
        n = results.load_job(settings, tracker, made_for)
    except (UserError, RuntimeError, OSError) as e:  # Blender could not read a variant: this material only
        return name, False, f"its variants could not be loaded: {e}"
    return name, True, f"{n} variant{'s' if n != 1 else ''}" + "".join(f" ({note})" for note in made_for["plan"].notes)


def _summary(outcomes) -> str:
    good = [f"{name} ({text})" for name, ok, text in outcomes if ok]
    bad = [f"{name}: {text}" for name, ok, text in outcomes if not ok]
    if not bad:
        return f"Variants for {len(good)} material{'s' if len(good) != 1 else ''}: {', '.join(good)}. Select an " \
               "object to pick and apply its material's variants"
    head = f"Variants for {len(good)} of {len(outcomes)} materials" + (f": {', '.join(good)}" if good else "")
    return f"{head}. Failed: {' | '.join(bad)}"


class TEXTURE_VARIANTS_OT_generate_selected(JobOperator, bpy.types.Operator):
    """Make variants of the image textures of every selected object's materials (or of every material in the
    file) in one go; each material's result set goes into its own history"""

    bl_idname = "texture_variants.generate_selected"
    bl_label = "Generate for Selected"
    bl_options = {"REGISTER", "UNDO"}

    all_materials: BoolProperty(name="All Materials", default=False,
                                description="Every material in the file instead of the selected objects' materials")
    timeout: timeout_property()

    def _submit(self, context, in_thread=False):
        """Find and export every material's texture, write the manifest, send the jobs. Changes no bpy data."""
        settings = context.scene.texture_variants
        materials = _materials(context, self.all_materials)
        config, root = prefs.backend_config(context), str(prefs.backend_root())
        storage.clean_up()
        seed = jobs.new_seed() if settings.randomize_seed else settings.seed
        folder = paths.new_job_folder(storage.jobs_root())  # the batch's folder: the manifest, a folder per job
        self._skipped, self._made_for, batch = [], [], []
        try:
            for material in materials:
                # variant k of job i has seed + i * variants + k: no two variants of the batch share one
                job_seed = (seed + len(batch) * settings.variants) % 2**31
                try:
                    job, made_for = _job_for(context, settings, material,
                                             folder / f"{len(batch) + 1:02d}-{paths.safe_stem(material.name)}",
                                             job_seed)
                except UserError as e:
                    self._skipped.append((material.name, False, str(e)))
                    continue
                batch.append(job)
                self._made_for.append(made_for)
            if not batch:
                raise UserError("no_image", "No material to vary: " + " | ".join(f"{n}: {t}" for n, _, t in
                                                                                 self._skipped),
                                "give the materials an Image Texture node feeding Base Color")
            batch_job.write_manifest(folder, batch)
            running = batch_job.submit(session.shared(), config, root, batch, in_thread=in_thread)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # our own folder: reference copies and the manifest
            raise
        self._seed, self._job_dir = seed, str(folder)
        return running

    def _finish(self, context, batch):
        settings = context.scene.texture_variants
        outcomes = [*self._skipped, *(_outcome(settings, tracker, made_for)
                                      for tracker, made_for in zip(batch.trackers, self._made_for, strict=True))]
        paths.mark_finished(self._job_dir)  # scratch from now on: clean-up may delete it by age
        batch_job.last_batch[:] = outcomes
        if not any(ok for _, ok, _ in outcomes):
            self.report({"ERROR"}, _summary(outcomes))
            return {"CANCELLED"}
        settings.seed = self._seed
        active = context.active_object.active_material if context.active_object else None
        if active is not None and any(ok and name == active.name for name, ok, _ in outcomes):
            results.use_history(settings, active, 0)  # the panel shows the active material's variants
        self.report({"INFO"} if all(ok for _, ok, _ in outcomes) else {"WARNING"}, _summary(outcomes))
        return {"FINISHED"}

    @reports_errors()
    def execute(self, context):  # scripts, `blender -b` and render farms: runs to completion
        batch = self._submit(context)
        try:
            batch.run_to_end(timeout=self.timeout or None)
        except Exception as e:
            raise UserError.from_exception(e) from e
        return self._finish(context, batch)


class TEXTURE_VARIANTS_OT_generate_all(bpy.types.Operator):
    """Make variants for every material in the file: asks first, with the count and about how long"""

    bl_idname = "texture_variants.generate_all"
    bl_label = "All Materials"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not session.shared().busy

    @reports_errors()
    def invoke(self, context, event):
        count = len(_materials(context, True))
        last = session.shared().job
        seconds = last.elapsed if last is not None and last.state == jobs.DONE and last.elapsed else None
        return context.window_manager.invoke_confirm(self, event, title="Generate for All Materials",
                                                     message=batch_job.confirm_message(count, seconds),
                                                     confirm_text="Generate All", icon="WARNING")

    def execute(self, context):  # confirmed (or a script): the batch, with progress and Cancel in the UI
        mode = "EXEC_DEFAULT" if bpy.app.background else "INVOKE_DEFAULT"
        return bpy.ops.texture_variants.generate_selected(mode, all_materials=True)


CLASSES = (TEXTURE_VARIANTS_OT_generate_selected, TEXTURE_VARIANTS_OT_generate_all)
