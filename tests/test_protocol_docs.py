"""docs/PROTOCOL.md matches the code: version, every request and event type, error code and field.

The types and codes are collected from the source itself (AST), so a new event or error code that is
not documented fails here.
"""

from __future__ import annotations

import ast
import inspect
import re

from backend.api import generate_variants
from backend.service import protocol
from blender_addon.connection import client as backend_client
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
SERVICE_SOURCES = sorted((ROOT / "backend" / "service").glob("*.py"))  # every module of the service
CLIENT_SOURCES = [ROOT / "blender_addon" / "connection" / name for name in ("client.py", "process.py", "config.py",
                                                                             "transfer.py", "inbox.py",
                                                                             "start_failure.py")]


def _section(title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/PROTOCOL.md has no '## {title}' section"
    return match.group(1)


def _headings(section: str) -> set[str]:
    return set(re.findall(r"^### `([a-z_]+)`", section, re.M))


def _table_names(text: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))


def _calls(path, name: str):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called == name:
                yield node


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dict_values(paths, key: str) -> set[str]:
    """String values of `key` in dict literals (the client builds its requests and events that way)."""
    found = set()
    nodes = (node for path in paths for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
    for node in nodes:
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if k is not None and _const(k) == key and _const(v) is not None:
                    found.add(_const(v))
    return found


def test_version_is_the_same_in_docs_service_and_client():
    match = re.search(r"\*\*Protocol version: (\d+)\*\*", DOC)
    assert match, "docs/PROTOCOL.md must state '**Protocol version: N**'"
    assert int(match.group(1)) == protocol.PROTOCOL_VERSION == backend_client.PROTOCOL_VERSION


def test_every_request_type_is_documented_and_nothing_else():
    assert _headings(_section("Requests")) == set(protocol.REQUEST_TYPES)


def test_every_event_type_is_documented_and_nothing_else():
    assert _headings(_section("Events")) == set(protocol.EVENT_TYPES)


def test_the_events_the_code_emits_are_declared_types():
    emitted = {"error"} if any(_calls(p, "error_event") for p in SERVICE_SOURCES) else set()
    for path in SERVICE_SOURCES:
        emitted |= {_const(call.args[0]) for call in _calls(path, "event") if call.args}
    emitted |= _dict_values(CLIENT_SOURCES, "type") - set(protocol.REQUEST_TYPES)  # its synthetic events
    assert None not in emitted, "an event type is computed; name it literally so it can be checked"
    assert emitted <= set(protocol.EVENT_TYPES)
    assert {"accepted", "progress", "result", "cancelled", "error", "hello", "status", "ack"} <= emitted


def test_the_requests_the_client_sends_are_declared_and_documented():
    sent = _dict_values(CLIENT_SOURCES, "type") - {"error"}  # "error": the synthetic backend_died event
    for path in sorted((ROOT / "blender_addon").rglob("*.py")):
        for name in ("request", "job"):  # job: the client's job requests (generate, restyle, make_tileable)
            sent |= {_const(call.args[0]) for call in _calls(path, name) if call.args and _const(call.args[0])}
        # an operator's job request: JobOperator's `request = "..."` class attribute
        sent |= {_const(node.value) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["request"]
                 and _const(node.value)}
    assert {"hello", "generate", "cancel", "shutdown", "make_tileable"} <= sent
    assert sent <= set(protocol.REQUEST_TYPES)


def test_every_error_code_in_the_code_is_documented():
    codes = set()
    for path in SERVICE_SOURCES + [ROOT / "backend" / "errors.py", *CLIENT_SOURCES]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                position = {"ProtocolError": 0, "UserError": 0, "error_event": 1}.get(name)
                if position is not None and len(node.args) > position and _const(node.args[position]):
                    codes.add(_const(node.args[position]))
                codes |= {_const(kw.value) for kw in node.keywords if kw.arg == "code" and _const(kw.value)}
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "code" for t in node.targets):
                if _const(node.value):
                    codes.add(_const(node.value))
    codes |= _dict_values(CLIENT_SOURCES, "code")
    assert {"bad_json", "bad_request", "unknown_type", "backend_died", "engine_failed"} <= codes
    assert codes <= _table_names(_section("Error codes")), sorted(codes - _table_names(_section("Error codes")))


def test_generate_fields_are_documented_and_carry_the_whole_python_api():
    documented = _table_names(_section("Requests").split("### `generate`")[1].split("### ")[0])
    assert documented == set(protocol.GENERATE_FIELDS)
    api = set(inspect.signature(generate_variants).parameters) - {"reference", "latents", "on_step", "cancel",
                                                                 "extra"}
    assert api <= set(protocol.GENERATE_FIELDS), f"API parameters the service cannot pass: {api - set(protocol.GENERATE_FIELDS)}"


def test_restyle_fields_are_documented_and_carry_the_restyle_api():
    documented = _table_names(_section("Requests").split("### `restyle`")[1].split("### ")[0])
    grouped = set(re.findall(r"`([a-z_]+)`", "".join(re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)+) \|",
                                                                   DOC, re.M))))
    assert set(protocol.RESTYLE_FIELDS) <= documented | grouped
    assert documented <= set(protocol.RESTYLE_FIELDS)
    assert set(protocol.RESTYLE_OPTIONS) <= documented


def test_status_fields_are_the_documented_ones():
    import json

    from backend.service.server import Service
    from tests.service_process import LineSink

    sink = LineSink()
    service = Service(sink)
    service.handle(b'{"id": "s", "type": "status"}')
    service.warmup.wait()  # its thread imports torch: never left running into a later test's sys.modules
    status = json.loads(sink.lines[-1])
    assert status["type"] == "status"
    table = _section("Events").split("### `status`")[1].split("### ")[0]
    documented = {name for cell in re.findall(r"^\| ((?:`[a-z_]+`(?:, )?)+) \|", table, re.M)
                  for name in re.findall(r"`([a-z_]+)`", cell)}
    assert set(status) - {"type", "id"} == documented


def test_status_while_torch_is_half_imported_still_answers(monkeypatch):
    """The warm-up thread imports torch while `status` may run: a half-initialised torch has no `cuda`."""
    import types

    from backend.service.memory import memory_report

    monkeypatch.setitem(__import__("sys").modules, "torch", types.ModuleType("torch"))
    memory = memory_report(torch_imported=False)
    assert memory["gpu_allocated_mb"] is None and memory["rss_mb"] > 0
