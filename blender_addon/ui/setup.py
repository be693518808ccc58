"""The set-up box of the preferences: Set up Backend's progress, the chosen torch build, disk space and
the last error; and the package indexes it installs from (drawn in the Pipeline section)."""

import os
import textwrap

import bpy

from .. import prefs
from ..errors import UserError
from ..setup import plan, runner


def _wrapped(layout, text: str, icon: str = "NONE", width: int = 110) -> None:
    for i, line in enumerate(textwrap.wrap(text, width)):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


def draw_indexes(col, preferences) -> None:
    """Where Set up Backend installs from (the Pipeline section of the preferences)."""
    col.prop(preferences, "installer")
    col.prop(preferences, "torch_index")
    col.prop(preferences, "package_index")
    overridden = [n for n in (plan.ENV_TORCH_INDEX, plan.ENV_INDEX) if os.environ.get(n)]
    if overridden:
        col.label(text="Overridden by the environment: " + ", ".join(overridden), icon="INFO")


def draw_setup(layout, preferences, context) -> None:
    """The set-up box of the preferences."""
    run = runner.Current.run
    if run is not None:
        if hasattr(layout, "progress"):  # Blender 4.0+
            layout.progress(factor=run.fraction, type="BAR", text=run.progress_text())
        else:
            layout.label(text=run.progress_text())
        layout.label(text=run.last_line[:120])
        layout.operator("texture_variants.cancel_setup", icon="CANCEL")
        return
    env = prefs.setup_environment()
    build = prefs.torch_build(prefs.setup_device(context))
    _wrapped(layout, f"Torch: {build.describe()}", "INFO")
    layout.label(text=env.space_note(build.kind), icon="DISK_DRIVE")
    state = env.state()
    try:
        current = bool(state) and env.is_current(plan.plan_stamp(prefs.backend_root(), build))
    except UserError:  # the backend code is missing: Set up Backend says so when clicked
        current = False
    row = layout.row()
    if current:
        row.operator("texture_variants.setup_backend", text="Repair", icon="TOOL_SETTINGS").repair = True
    else:
        row.operator("texture_variants.setup_backend", icon="CONSOLE")
    row.operator("texture_variants.check_backend", icon="FILE_REFRESH")
    if env.target.exists():
        row.operator("texture_variants.remove_backend", icon="TRASH")
    if state:
        layout.label(text=f"Installed {state.get('finished', '')} with {state.get('installer')}: "
                     f"{state.get('build', '')}", icon="CHECKMARK")
    if not bpy.app.online_access:
        layout.label(text="Online access is off: Set up Backend will print the commands to run by hand",
                     icon="ERROR")
    if runner.Current.last_error:
        _wrapped(layout, runner.Current.last_error, "ERROR")
