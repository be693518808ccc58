"""The UI path of Generate (invoke + modal on a timer), which headless Blender never runs by itself:
the operator's own invoke-time submit and modal() are driven here with TIMER and ESC events, as
Blender's event loop would. Everything else is real: bpy data, the backend process, its events.
See harness.py for how it is run."""

import os
import shutil
import sys
import time
import types

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


class Event:
    def __init__(self, type, value="NOTHING"):
        self.type, self.value = type, value


class ModalDriver:
    """Holds what Blender keeps for a running modal operator: the instance's attributes."""

    def __init__(self, operator_class):
        self.cls, self.reports = operator_class, []
        for name in ("_submit", "_finish"):
            setattr(self, name, types.MethodType(getattr(operator_class, name), self))

    def __getattr__(self, name):
        """The operator class's other methods and attributes, as a real operator instance has them."""
        value = getattr(self.cls, name)
        return types.MethodType(value, self) if callable(value) and not isinstance(value, type) else value

    def report(self, kinds, message):
        self.reports.append([sorted(kinds), message])

    def run(self, context, esc_when=None, limit=300):
        """invoke's work (submit on a thread, add a timer), then TIMER events until modal() ends."""
        self._submit(context, in_thread=True)
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        session = h.addon_module("connection.session").shared()
        states, deadline = [], time.monotonic() + limit
        while time.monotonic() < deadline:
            if esc_when is not None and esc_when(session.job):
                result = self.cls.modal(self, context, Event("ESC", "PRESS"))
                esc_when = None
            else:
                time.sleep(0.2)
                result = self.cls.modal(self, context, Event("TIMER"))
            states.append(session.job.state)
            if result != {"PASS_THROUGH"}:
                return sorted(result), [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
        raise AssertionError("modal generate never ended")


class CheckDriver:
    """Stands in for a running Check Backend operator: its methods bound to this object, reports kept."""

    def __init__(self, timeout):
        cls = h.addon_module("operators.check").TEXTURE_VARIANTS_OT_check_backend
        self.timeout, self.reports, self._asked = timeout, [], ""
        for name in ("_begin", "modal", "_step", "_end"):
            setattr(self, name, types.MethodType(getattr(cls, name), self))

    def report(self, kinds, message):
        self.reports.append([sorted(kinds), message])

    def run(self, context, esc_after=None, limit=30.0):
        """invoke's work (timed: it must not wait for the backend), then TIMER events (ESC after `esc_after` s)."""
        start = time.monotonic()
        self._begin(context)
        self._timer = context.window_manager.event_timer_add(0.3, window=context.window)
        invoke_s, result = time.monotonic() - start, {"RUNNING_MODAL"}
        longest = 0.0
        while result == {"RUNNING_MODAL"} or result == {"PASS_THROUGH"}:
            if time.monotonic() - start > limit:
                raise AssertionError("modal check_backend never ended")
            time.sleep(0.1)
            press = esc_after is not None and time.monotonic() - start > esc_after
            tick = time.monotonic()
            result = self.modal(context, Event("ESC", "PRESS") if press else Event("TIMER"))
            longest = max(longest, time.monotonic() - tick)
        return {"result": sorted(result), "invoke_s": invoke_s, "longest_modal_s": longest,
                "total_s": time.monotonic() - start, "reports": self.reports,
                "status": bpy.context.preferences.addons[h.MODULE].preferences.status}


def check_backend_cases(rec, workdir):
    """A backend that never answers hello: Check Backend keeps the UI free, times out or is cancelled."""
    silent = os.path.join(workdir, "silent_python")
    with open(silent, "w") as f:
        f.write("#!/bin/sh\nexec sleep 600\n")
    os.chmod(silent, 0o755)
    os.environ["TEXTURE_VARIANTS_PYTHON"] = silent
    session = h.addon_module("connection.session").shared()
    rec["check_timeout"] = CheckDriver(timeout=2.0).run(bpy.context)
    rec["check_esc"] = CheckDriver(timeout=60.0).run(bpy.context, esc_after=1.0)
    time.sleep(1.0)
    client = session._client
    rec["check_esc"]["process_gone"] = client is None or not client.alive


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    source = shutil.copy(texture, os.path.join(workdir, "gravel.png"))
    _, material, _ = h.plane_with_image(bpy.data.images.load(source))
    generate = h.addon_module("operators.generate").TEXTURE_VARIANTS_OT_generate
    jobs_dir = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")

    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=64, steps=2, seed=21, randomize_seed=False)
    driver = ModalDriver(generate)
    before = h.snapshot(material)
    rec["done"] = list(driver.run(bpy.context)) + [driver.reports]
    settings = bpy.context.scene.texture_variants
    rec["done_results"] = [[r.seed, list(r.image.size)] for r in settings.results]
    rec["done_material_unchanged"] = h.snapshot(material)[material.name] == before[material.name]

    h.set_settings(engine="diffusion", variants=4, steps=200)
    driver = ModalDriver(generate)
    before = h.snapshot(material)
    jobs_before = sorted(os.listdir(jobs_dir))
    rec["esc"] = list(driver.run(bpy.context, esc_when=lambda job: job.state == "running")) + [driver.reports]
    rec["esc_unchanged"] = h.snapshot(material) == before
    rec["esc_job_folder_removed"] = sorted(os.listdir(jobs_dir)) == jobs_before

    os.environ["TEXTURE_VARIANTS_PYTHON"] = os.path.join(workdir, "no-venv", "bin", "python")
    driver = ModalDriver(generate)
    rec["not_set_up"] = list(driver.run(bpy.context)) + [driver.reports]

    check_backend_cases(rec, workdir)


h.Recorder().run(scenario)
