"""Set up Backend, Repair, Cancel and Remove Backend: the bpy side of setup.environment (the preferences'
set-up box that shows them is `ui.setup`)."""

import sys

import bpy
from bpy.props import BoolProperty, EnumProperty

from .. import prefs as preferences
from ..connection import session
from ..errors import UserError, reports_errors
from ..setup import environment as backend_setup
from ..setup import plan, runner


class BackgroundRun:
    """An operator whose work is a runner.SetupRun (commands in a worker thread): scripts wait for it,
    the UI polls it on a timer and shows its progress in the preferences' set-up box."""

    _timer = None

    def _start(self, context):
        """The started run, or anything else when there is nothing to run (handed to `_check`)."""
        raise NotImplementedError

    def _check(self, outcome):
        return {"CANCELLED"}

    def _finish(self, context, run):
        raise NotImplementedError

    @reports_errors()
    def execute(self, context):  # scripts and background mode: blocks until done
        run = self._start(context)
        if not isinstance(run, runner.SetupRun):
            return self._check(run)
        run.join()
        return self._finish(context, run)

    @reports_errors()
    def invoke(self, context, event):
        run = self._start(context)
        if not isinstance(run, runner.SetupRun):
            return self._check(run)
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        run = runner.Current.run
        if event.type == "ESC":
            run.cancel()
        if event.type == "TIMER":
            for area in context.screen.areas if context.screen else ():
                area.tag_redraw()
            if run.finished:
                context.window_manager.event_timer_remove(self._timer)
                return self._finish(context, run)
        return {"PASS_THROUGH"}


class TEXTURE_VARIANTS_OT_setup_backend(BackgroundRun, bpy.types.Operator):
    """Create a Python environment for the backend in the extension's user folder and install its packages"""

    bl_idname = "texture_variants.setup_backend"
    bl_label = "Set up Backend"
    bl_options = {"REGISTER"}

    repair: BoolProperty(name="Repair", default=False, options={"SKIP_SAVE"},
                         description="Build the environment again even when it is up to date")

    def _refuse_offline(self, context, build) -> bool:
        if bpy.app.online_access:
            return False
        steps = plan.setup_steps(sys.executable, preferences.venv_folder(), preferences.backend_root(),
                                 preferences.package_indexes(context, build), installer="pip")
        print("Texture Variants: install the backend by hand with:\n" + plan.manual_instructions(steps))
        self.report({"ERROR"}, "Online access is off, so the backend's packages cannot be downloaded. To fix: "
                    "allow it in Preferences > System > Network, or run the commands printed in the system "
                    "console and set Backend Python to the environment's python")
        return True

    def _start(self, context):
        """The running set-up; "current" when there is nothing to do; None when refused (offline).

        Raises UserError when it cannot start (already running, busy, bad settings, no disk space).
        """
        if runner.Current.run is not None:
            raise UserError("busy", "Set up Backend is already running", "wait for it, or cancel it")
        if self.repair:
            preferences.torch_build.cache_clear()
        build = preferences.torch_build(preferences.setup_device(context))
        env, root = preferences.setup_environment(), preferences.backend_root()
        if not self.repair and env.is_current(plan.plan_stamp(root, build)):
            self.report({"INFO"}, f"The backend is already set up ({build.label}); Repair builds it again")
            return "current"
        if self._refuse_offline(context, build):
            return None
        if session.shared().busy:
            raise UserError("busy", "A variant is being generated", "wait for it, or cancel it first")
        session.shared().stop()  # nothing may run from the environment while it is replaced
        prefs = preferences.get(context)
        uv = plan.find_uv() if prefs.installer == "uv" else None
        try:
            run = backend_setup.start_setup(env, sys.executable, root, build,
                                            preferences.package_indexes(context, build),
                                            installer=prefs.installer, uv=uv)
        except OSError as e:  # undoing an interrupted set-up's folders failed
            raise UserError("setup_failed", f"Could not prepare {env.target.parent}: {e}",
                            "close programs using that folder, or click Remove Backend, then try again") from e
        runner.Current.run = run
        runner.Current.last_error = ""
        return run

    def _check(self, outcome):
        """Nothing to set up: check the environment that is there. Refused: cancelled."""
        return {"FINISHED"} if outcome == "current" and self._check_backend() else {"CANCELLED"}

    @staticmethod
    def _check_backend() -> bool:
        mode = "EXEC_DEFAULT" if bpy.app.background else "INVOKE_DEFAULT"
        try:
            return "CANCELLED" not in bpy.ops.texture_variants.check_backend(mode)
        except RuntimeError:  # its own report already says why
            return False

    def _finish(self, context, run):
        runner.Current.run = None
        if run.error:
            runner.Current.last_error = run.error
            self.report({"ERROR"}, f"Backend set-up: {run.error}")
            return {"CANCELLED"}
        state = preferences.setup_environment().state() or {}
        self.report({"INFO"}, f"Backend set up in {state.get('seconds', '?')} s: {state.get('build', '')}")
        self._check_backend()  # the panel then shows what the backend says about itself
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_cancel_setup(bpy.types.Operator):
    """Stop Set up Backend; the previous backend environment (or none) stays as it was"""

    bl_idname = "texture_variants.cancel_setup"
    bl_label = "Cancel Set-up"
    bl_options = {"REGISTER"}

    def execute(self, context):
        run = runner.Current.run
        if run is None:
            self.report({"WARNING"}, "Set up Backend is not running")
            return {"CANCELLED"}
        run.cancel()  # the set-up's own operator reports the outcome when its worker has stopped
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_remove_backend(bpy.types.Operator):
    """Delete the backend environment Set up Backend made (models in the Hugging Face cache stay)"""

    bl_idname = "texture_variants.remove_backend"
    bl_label = "Remove Backend"
    bl_options = {"REGISTER"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    @reports_errors()
    def execute(self, context):
        if session.shared().busy or runner.Current.run is not None:
            raise UserError("busy", "The backend is in use (generating, or being set up)",
                            "wait for it, or cancel it first")
        session.shared().stop()
        env = preferences.setup_environment()
        try:
            removed = env.remove()
        except OSError as e:
            raise UserError("remove_failed", f"Could not remove {env.target}: {e}",
                            "close programs using it and try again") from e
        preferences.get(context).status = "Backend removed" if removed else "No backend was set up"
        self.report({"INFO"}, f"Removed {env.target}" if removed else "No backend was set up")
        return {"FINISHED"}


class TEXTURE_VARIANTS_OT_download_model(BackgroundRun, bpy.types.Operator):
    """Download a control's default model into the Hugging Face cache with the backend's download-models
    (the base model and IP-Adapter come with it when they are not there yet)"""

    bl_idname = "texture_variants.download_model"
    bl_label = "Download"
    bl_options = {"REGISTER"}

    model: EnumProperty(name="Model", items=[
        ("lgp", "LGP", "The Structure Guide's soft mode: the published SD1.5 latent guidance predictor"),
        ("controlnet", "ControlNet", "The Structure Guide's strict mode: an SD1.5 lineart ControlNet (1.4 GB)"),
        ("sam", "Segment Anything", "Restyle's point masks: SlimSAM (about 112 MB)"),
        ("content-encoder", "Content Encoder", "Style Only's Subject to Drop: the CLIP ViT-H/14 text model (4 GB)"),
        ("fast", "Fast Sampling LoRA", "Quality: Fast: LCM-LoRA for SD1.5 (about 135 MB)"),
    ])

    def _start(self, context):
        if runner.Current.run is not None:
            raise UserError("busy", "Set up Backend or a download is already running", "wait for it, or cancel it")
        config = preferences.backend_config(context)
        if config.remote_command:
            raise UserError("remote_backend", "The backend runs elsewhere (Backend Command), so its models live there",
                            f"run `python -m backend download-models --{self.model}` on that machine")
        if not bpy.app.online_access:
            raise UserError("offline", "Online access is off, so no model can be downloaded",
                            "allow it in Preferences > System > Network, or run "
                            f"`python -m backend download-models --{self.model}` yourself")
        argv = (config.python, "-m", "backend", "download-models", f"--{self.model}")
        step = plan.Step(f"Downloading the {self.model} model", argv, cwd=str(preferences.backend_root()))
        run = runner.SetupRun([step], log_path=preferences.user_folder("logs") / "download-models.log").start()
        runner.Current.run, runner.Current.last_error = run, ""
        return run

    def _finish(self, context, run):
        runner.Current.run = None
        if run.error:
            runner.Current.last_error = run.error
            self.report({"ERROR"}, f"Download: {run.error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Downloaded the {self.model} model into the Hugging Face cache: leave its field "
                    "empty to use it")
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_setup_backend, TEXTURE_VARIANTS_OT_cancel_setup, TEXTURE_VARIANTS_OT_remove_backend,
           TEXTURE_VARIANTS_OT_download_model)
