"""Check Backend: start the backend and show what it says about itself (version, engines, device).

From the UI it never blocks: the start (hello) runs on a worker thread, a timer polls it and then asks
for the device; ESC cancels and `timeout` seconds end the wait (the backend is stopped then). Scripts
and background mode (`execute`) wait for the answer.
"""

import time

import bpy

from .. import prefs
from ..connection import session
from ..errors import UserError, reports_errors


def _show_not_ready(operator, context, error: UserError) -> None:
    prefs.get(context).status = f"Not ready: {error.message}"


def _redraw(context) -> None:
    for area in context.screen.areas if context.screen else ():
        area.tag_redraw()


class TEXTURE_VARIANTS_OT_check_backend(bpy.types.Operator):
    """Start the backend and show what it reports (version, engines, device)"""

    bl_idname = "texture_variants.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    timeout: bpy.props.FloatProperty(name="Timeout", default=60.0, min=0.0,
                                     description="How long to wait for the backend's answer and its device")

    _timer = None
    _asked = ""
    _since = 0.0
    _starting = None

    def _step(self, context) -> bool:
        """One round of asking for the device; True when known (or when waiting is over)."""
        current = session.shared()
        current.pump()
        reply = current.replies.pop(self._asked, None) if self._asked else None
        if reply is not None:
            current.note_status(reply)
            prefs.get(context).status = prefs.describe_hello(current.hello)
            self._asked = ""
        if current.device_known() or time.monotonic() - self._since > self.timeout:
            return True
        if not self._asked:
            self._asked = current.request_status()
        return False

    @reports_errors(_show_not_ready)
    def execute(self, context):  # scripts and background mode: waits for the device
        session.shared().start(prefs.backend_config(context), str(prefs.backend_root()))
        prefs.get(context).status = prefs.describe_hello(session.shared().hello)
        self._since = time.monotonic()
        while not self._step(context):
            time.sleep(0.2)
        self.report({"INFO"}, prefs.get(context).status)
        return {"FINISHED"}

    def _begin(self, context) -> None:
        """Start the backend on a worker thread; returns at once."""
        config, root = prefs.backend_config(context), str(prefs.backend_root())
        self._starting = session.shared().start_in_background(config, root)
        self._since = time.monotonic()
        prefs.get(context).status = "Starting the backend… (ESC cancels)"

    @reports_errors(_show_not_ready)
    def invoke(self, context, event):  # the UI: returns at once, modal() follows the start
        self._begin(context)
        self._timer = context.window_manager.event_timer_add(0.3, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _end(self, context, result: set, message: str = "") -> set:
        context.window_manager.event_timer_remove(self._timer)
        if message:
            prefs.get(context).status = f"Not ready: {message}"
            self.report({"ERROR"}, message)
        _redraw(context)
        return result

    def modal(self, context, event):
        starting = self._starting
        if event.type == "ESC" and event.value == "PRESS":
            starting.abort()
            return self._end(context, {"CANCELLED"}, "Check Backend cancelled")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not starting.done:
            if time.monotonic() - self._since > self.timeout:
                starting.abort()
                return self._end(context, {"CANCELLED"}, f"the backend did not answer within {self.timeout:g} s. "
                                 "To fix: see the system console for its log, then check Backend Python")
            return {"PASS_THROUGH"}
        if starting.error is not None:
            return self._end(context, {"CANCELLED"}, str(starting.error))
        try:
            done = self._step(context)
        except UserError:
            done = True
        prefs.get(context).status = prefs.describe_hello(session.shared().hello or {})
        _redraw(context)
        return self._end(context, {"FINISHED"}) if done else {"PASS_THROUGH"}


CLASSES = (TEXTURE_VARIANTS_OT_check_backend,)
