"""The add-on's job state (blender_addon/connection/job.py): backend events folded into what the panel shows."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from blender_addon.connection import job as jobs

JOB_ID = "r7"

events_for = st.sampled_from([JOB_ID, "other", None])
event = st.one_of(
    st.builds(lambda i: {"type": "accepted", "id": i, "job": i}, events_for),
    st.builds(lambda i, s, t, e, p: {"type": "progress", "id": i, "step": min(s, t), "total": t, "elapsed": 1.0,
                                     "eta": e, **({"preview": p} if p else {})},
              events_for, st.integers(0, 50), st.integers(1, 50), st.one_of(st.none(), st.floats(0, 1e4)),
              st.one_of(st.none(), st.just("/tmp/p.png"))),
    st.builds(lambda i, n: {"type": "result", "id": i, "files": [{"path": f"/j/v{k}.png"} for k in range(n)]},
              events_for, st.integers(0, 4)),
    st.builds(lambda i, c: {"type": "error", "id": i, "code": c, "message": "m", "hint": "h"},
              events_for, st.sampled_from(["bad_input", "models_missing", "backend_died"])),
    st.builds(lambda i: {"type": "cancelled", "id": i}, events_for),
    st.builds(lambda i: {"type": "pong", "id": i}, events_for),
)


def _concerns(e) -> bool:
    return e["id"] == JOB_ID or (e["type"] == "error" and e["code"] == "backend_died")


@given(st.lists(event, max_size=30))
def test_state_follows_only_this_jobs_events_and_final_states_stick(events):
    job = jobs.JobTracker(JOB_ID)
    first_final = None
    for e in events:
        before = (job.state, job.step, job.files, job.error)
        changed = job.apply(e)
        if first_final is not None or not _concerns(e):
            assert not changed and (job.state, job.step, job.files, job.error) == before
        if first_final is None and job.finished:
            first_final = e
        assert 0.0 <= job.fraction <= 1.0
        assert job.status_text()
    relevant = [e for e in events if _concerns(e) and e["type"] in ("result", "error", "cancelled")]
    if not relevant:
        assert not job.finished
    else:
        final = relevant[0]
        assert first_final is final
        expected = {"result": jobs.DONE, "error": jobs.FAILED, "cancelled": jobs.CANCELLED}[final["type"]]
        assert job.state == expected
        if expected == jobs.DONE:
            assert job.files == final["files"] and job.fraction == 1.0
        if expected == jobs.FAILED:
            assert job.error["code"] == final["code"]


def test_progress_shows_step_total_and_eta():
    job = jobs.JobTracker(JOB_ID)
    assert job.status_text() == "Starting the backend…"
    job.apply({"type": "accepted", "id": JOB_ID})
    job.apply({"type": "progress", "id": JOB_ID, "step": 3, "total": 12, "elapsed": 2.0, "eta": 65.0,
               "preview": "/jobs/a/preview.png"})
    assert job.status_text() == "Step 3/12 · 1:05 left"
    assert job.fraction == 0.25 and job.preview == "/jobs/a/preview.png" and job.preview_serial == 1
    job.apply({"type": "progress", "id": JOB_ID, "step": 4, "total": 12, "elapsed": 3.0})
    assert job.preview_serial == 1 and job.eta is None and job.status_text() == "Step 4/12"
    job.cancel_requested = True
    assert job.status_text() == "Cancelling…"


def test_a_dead_backend_ends_the_job_whatever_its_id():
    job = jobs.JobTracker(JOB_ID)
    job.apply({"type": "accepted", "id": JOB_ID})
    assert job.apply({"type": "error", "id": None, "code": "backend_died", "message": "exit code -9"})
    assert job.state == jobs.FAILED and job.error["code"] == "backend_died"


@given(st.integers(0, 20000), st.integers(0, 20000), st.booleans())
def test_request_params_send_the_size_as_width_and_height_within_the_backends_range(width, height, pick_seed):
    settings = {"engine": "patch", "variants": 3, "steps": 7, "size": (width, height), "tile": "x", "balance": 1,
                "appearance": "kv", "image_node": "ignored"}
    seed = jobs.new_seed(random.Random(width)) if pick_seed else 42
    params = jobs.request_params(settings, seed)
    assert set(params) == {*jobs.REQUEST_SETTINGS, "seed"}
    assert params["size"] == [min(max(width, 64), 8192), min(max(height, 64), 8192)]
    assert isinstance(params["balance"], float) and params["seed"] == seed and 0 <= seed < 2**31
    assert jobs.request_params(settings | {"size": 300}, seed)["size"] == [300, 300]  # an int: a square


def test_request_params_are_accepted_by_the_backend():
    from backend.params import GenerationParams

    settings = {"engine": "auto", "variants": 2, "steps": 30, "size": [1024, 384], "tile": "both", "balance": 0.3,
                "appearance": "none"}
    assert GenerationParams.build(**jobs.request_params(settings, 5)).size == (1024, 384)


def test_format_seconds():
    assert [jobs.format_seconds(s) for s in (None, -1, 0, 59.6, 61, 3725)] == ["", "", "0:00", "1:00", "1:01",
                                                                               "1:02:05"]
