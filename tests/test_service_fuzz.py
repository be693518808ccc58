"""Malformed input: every bad line gets one `error` event, the service lives on, stdout stays JSON.

One real service process answers a hand-written corpus and then hypothesis-generated lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.service.protocol import MAX_LINE_BYTES, REQUEST_TYPES, ProtocolError
from backend.service.request_checks import parse_request
from tests.service_process import ServiceProcess
from tests.test_service_limits import png_declaring

IN, OUT = "/tmp/in.png", "/tmp/out"


def _obj(**fields) -> bytes:
    return json.dumps(fields).encode()


def _generate(**fields) -> bytes:
    return _obj(id="g", type="generate", **({"input": IN, "output_dir": OUT} | fields))


# (line, expected code, expected id): the id is echoed only when the line had a valid one.
CORPUS = [
    (b"", "bad_json", None),
    (b"   ", "bad_json", None),
    (b"hello", "bad_json", None),
    (b"{", "bad_json", None),
    (b"{'id': 1, 'type': 'hello'}", "bad_json", None),
    (b'{"id": 1, "type": "hello"} trailing', "bad_json", None),
    (b'{"id": 1, "type": "hello",}', "bad_json", None),
    (b'{"id": NaN, "type": "hello"}', "bad_json", None),
    (b'{"id": 1, "type": "generate", "balance": Infinity}', "bad_json", None),
    (b"\xff\xfe{}", "bad_json", None),
    (b'{"id": "\xc3\x28", "type": "hello"}', "bad_json", None),
    (b"[" * 100_000, "bad_json", None),
    (b"null", "bad_request", None),
    (b"true", "bad_request", None),
    (b"42", "bad_request", None),
    (b'"hello"', "bad_request", None),
    (b'[{"id": 1, "type": "hello"}]', "bad_request", None),
    (b"{}", "bad_request", None),
    (_obj(type="hello"), "bad_request", None),
    (_obj(id=None, type="hello"), "bad_request", None),
    (_obj(id=True, type="hello"), "bad_request", None),
    (_obj(id=1.5, type="hello"), "bad_request", None),
    (_obj(id="", type="hello"), "bad_request", None),
    (_obj(id="x" * 201, type="hello"), "bad_request", None),
    (_obj(id=[1], type="hello"), "bad_request", None),
    (_obj(id={"a": 1}, type="hello"), "bad_request", None),
    (_obj(id=2**70, type="hello"), "bad_request", None),
    (_obj(id="a"), "bad_request", "a"),
    (_obj(id="a", type=None), "bad_request", "a"),
    (_obj(id="a", type=7), "bad_request", "a"),
    (_obj(id="a", type=["hello"]), "bad_request", "a"),
    (_obj(id="a", type="HELLO"), "unknown_type", "a"),
    (_obj(id="a", type="helo"), "unknown_type", "a"),
    (_obj(id="a", type=""), "unknown_type", "a"),
    (_obj(id="a", type="result"), "unknown_type", "a"),
    (_obj(id="a", type="exec"), "unknown_type", "a"),
    (_obj(id="a", type="hello", protocol="1"), "bad_request", "a"),
    (_obj(id="a", type="hello", protocol=True), "bad_request", "a"),
    (_obj(id="a", type="hello", protocol=999), "protocol_mismatch", "a"),
    (_obj(id="a", type="hello", protocol=0), "protocol_mismatch", "a"),
    (_obj(id="a", type="hello", client=5), "bad_request", "a"),
    (_obj(id="a", type="hello", colour="blue"), "bad_request", "a"),
    (_obj(id="a", type="status", verbose=True), "bad_request", "a"),
    (_obj(id="a", type="unload", now=1), "bad_request", "a"),
    (_obj(id="a", type="shutdown", force=True), "bad_request", "a"),
    (_obj(id="a", type="cancel"), "bad_request", "a"),
    (_obj(id="a", type="cancel", job=None), "bad_request", "a"),
    (_obj(id="a", type="cancel", job=False), "bad_request", "a"),
    (_obj(id="a", type="cancel", job="nothing-runs"), "unknown_job", "a"),
    (_obj(id="g", type="generate"), "bad_request", "g"),
    (_obj(id="g", type="generate", input=IN), "bad_request", "g"),
    (_obj(id="g", type="generate", output_dir=OUT), "bad_request", "g"),
    (_generate(input="relative.png"), "bad_request", "g"),
    (_generate(output_dir="out"), "bad_request", "g"),
    (_generate(input=""), "bad_request", "g"),
    (_generate(input=5), "bad_request", "g"),
    (_generate(input="/tmp/a\u0000b.png"), "bad_request", "g"),
    (_generate(variants=0), "bad_request", "g"),
    (_generate(variants=17), "bad_request", "g"),
    (_generate(variants="2"), "bad_request", "g"),
    (_generate(variants=1.5), "bad_request", "g"),
    (_generate(variants=True), "bad_request", "g"),
    (_generate(size=63), "bad_request", "g"),
    (_generate(size=8200), "bad_request", "g"),  # sides are 64-8192 (any W x H)
    (_generate(size=[512, 9000]), "bad_request", "g"),
    (_generate(size=[512]), "bad_request", "g"),
    (_generate(steps=0), "bad_request", "g"),
    (_generate(steps=None), "bad_request", "g"),
    (_generate(tile="diagonal"), "bad_request", "g"),
    (_generate(engine="dalle"), "bad_request", "g"),
    (_generate(appearance="swap"), "bad_request", "g"),
    (_generate(ip_mode="layout"), "bad_request", "g"),
    (_generate(suppress_content=["bricks"]), "bad_request", "g"),
    (_generate(balance=-0.1), "bad_request", "g"),
    (_generate(balance=1.1), "bad_request", "g"),
    (_generate(balance="half"), "bad_request", "g"),
    (_generate(seed=-1), "bad_request", "g"),
    (_generate(seed="lucky"), "bad_request", "g"),
    (_generate(seed=2**64), "bad_request", "g"),
    (_generate(ip_scale=31), "bad_request", "g"),
    (_generate(guidance_scale=[7.5]), "bad_request", "g"),
    (_generate(prompt=5), "bad_request", "g"),
    (_generate(negative_prompt={"no": 1}), "bad_request", "g"),
    (_generate(base=""), "bad_request", "g"),
    (_generate(ip_adapter=3), "bad_request", "g"),
    (_generate(tiled_preview="yes"), "bad_request", "g"),
    (_generate(preview_every=-1), "bad_request", "g"),
    (_generate(preview_every=2.5), "bad_request", "g"),
    (_generate(extra=[1, 2]), "bad_request", "g"),
    (_generate(extra={"1bad": 1}), "bad_request", "g"),
    (_generate(extra={"seed": 1}), "bad_request", "g"),
    (_generate(output="x"), "bad_request", "g"),
    (_generate(Variants=2), "bad_request", "g"),
    (_generate(extra={"allow_pickle": True}), "bad_request", "g"),  # a start option, never a request's
    (_generate(extra={"allow_pickle": False}), "bad_request", "g"),
    (_generate(extra={"allow_pickle": True, "dtype": "float32"}), "bad_request", "g"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    proc = ServiceProcess(tmp_path_factory.mktemp("fuzz"))
    yield proc
    assert proc.stop() == 0, proc.stderr_tail()


def _answer(service, line: bytes) -> dict:
    service.send_line(line)
    event = service.next_event(timeout=60)
    assert event is not None, f"the service died on {line[:200]!r}:\n{service.stderr_tail()}"
    return event


def test_the_corpus_is_large_and_the_local_parser_refuses_all_of_it():
    assert len(CORPUS) >= 50
    for line, code, _ in CORPUS:
        if code == "unknown_job":  # well-formed: only the service knows no such job runs
            continue
        with pytest.raises(ProtocolError) as refused:
            parse_request(line)
        assert refused.value.code == code, line[:100]


def test_every_corpus_line_gets_one_error_event_and_hello_still_works(service):
    lines_before = service.lines
    for line, code, request_id in CORPUS:
        event = _answer(service, line)
        assert event["type"] == "error", (line[:200], event)
        assert event["code"] == code, (line[:200], event)
        assert event["id"] == request_id, (line[:200], event)
        assert event["message"] and event["hint"]
    # A line longer than the limit is refused without reading it whole into one request.
    event = _answer(service, b'{"id": "big", "type": "hello", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}')
    assert event["code"] == "line_too_long"
    assert service.lines - lines_before == len(CORPUS) + 1  # exactly one answer per line
    assert service.events.empty()
    hello = service.ask("hello")
    assert hello["type"] == "hello"
    assert service.bad_lines == []


def _refused(line: bytes) -> ProtocolError | None:
    try:
        request = parse_request(line)
    except ProtocolError as e:
        return e
    return None if request.type != "cancel" else ProtocolError("unknown_job", "", "", request.id)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
request_like = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=5), st.integers(), st.none(), st.booleans()),
     "type": st.one_of(st.sampled_from(REQUEST_TYPES), st.text(max_size=8), json_values)},
    optional={"job": json_values, "input": json_values, "output_dir": json_values, "size": json_values,
              "protocol": json_values, "variants": json_values, "extra": json_values},
).map(lambda d: json.dumps(d).encode())
raw_text = st.text().map(lambda s: s.encode("utf-8", "surrogatepass"))
raw_bytes = st.binary(max_size=200)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(line=st.one_of(raw_text, raw_bytes, request_like))
def test_any_malformed_line_gets_the_error_the_protocol_defines(service, line):
    assume(b"\n" not in line)
    expected = _refused(line)
    assume(expected is not None)  # a valid request (hello, status, ...) is not malformed
    event = _answer(service, line)
    assert event["type"] == "error" and event["code"] == expected.code
    assert event["id"] == expected.request_id
    assert service.bad_lines == []


def _job_corpus(tmp: Path) -> list[tuple[dict, str]]:
    """Well-formed generate requests that fail when the job runs: (fields, expected code)."""
    fifo = tmp / "fifo.png"
    os.mkfifo(fifo)
    small = tmp / "small.png"
    Image.new("RGB", (64, 64), "gray").save(small)
    tiny = tmp / "tiny.png"
    Image.new("RGB", (8, 8), "gray").save(tiny)
    a_file = tmp / "a-file"
    a_file.write_text("x")
    out = str(tmp / "out")
    return [
        ({"input": str(fifo), "output_dir": out}, "bad_input"),
        ({"input": "/dev/zero", "output_dir": out}, "bad_input"),
        ({"input": "/dev/null", "output_dir": out}, "bad_input"),
        ({"input": str(tmp), "output_dir": out}, "bad_input"),
        ({"input": str(tmp / "missing.png"), "output_dir": out}, "bad_input"),
        ({"input": str(a_file), "output_dir": out}, "bad_input"),
        ({"input": str(tiny), "output_dir": out}, "bad_input"),
        ({"input": str(png_declaring(tmp / "bomb.png", 20000, 20000)), "output_dir": out}, "bad_input"),
        ({"input": str(png_declaring(tmp / "wide.png", 16500, 64)), "output_dir": out}, "bad_input"),
        ({"input": "/tmp/bad-\ud800.png", "output_dir": out}, "bad_input"),
        ({"input": str(small), "output_dir": str(tmp / "no" / "parent")}, "bad_output"),
        ({"input": str(small), "output_dir": str(a_file)}, "bad_output"),
        ({"input": str(small), "output_dir": str(tmp / "bad-\udcff\ud800")}, "bad_output"),
        ({"input": str(small), "output_dir": "/proc/self/no-such-folder/out"}, "bad_output"),
    ]


def test_every_job_corpus_request_ends_in_one_error_and_leaves_nothing(service, tmp_path):
    for fields, code in _job_corpus(tmp_path):
        job = service.send("generate", engine="patch", size=64, **fields)
        events = service.job_events(job)
        assert [e["type"] for e in events] == ["accepted", "error"], (fields, events[-1])
        assert events[-1]["code"] == code and events[-1]["hint"], (fields, events[-1])
    assert not (tmp_path / "out").exists() and not (tmp_path / "no").exists()


def test_after_the_fuzz_the_service_still_answers(service):
    assert service.ask("hello")["type"] == "hello"
    assert service.ask("status")["running"] is None
    assert service.bad_lines == []
