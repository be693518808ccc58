"""A control added through the public contract (backend/diffusion/controls/base.py) alone, on the
tiny models: the loop calls its hooks at every step of every branch, passes its UNet arguments,
installs its processor for the branch it asks for, counts its passes, and records it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import generate_variants
from backend.diffusion import balance, controls
from backend.diffusion.controls.base import GENERATED, Control

SIZE, STEPS = 64, 3


class CountingProcessor:
    """Delegates to the layer's own processor and counts the calls."""

    def __init__(self, original, calls: list):
        self.original, self.calls = original, calls

    def __call__(self, *args, **kwargs):
        self.calls.append(1)
        return self.original(*args, **kwargs)


class StepRecorder(Control):
    """Changes nothing; remembers where the loop called it."""

    name = "step-recorder"
    layer = "up_blocks.3.attentions.1.transformer_blocks.0.attn1"

    def __init__(self):
        self.steps, self.kwargs_calls, self.processor_calls, self.branches = [], 0, [], []

    def processors(self, branch, originals):
        self.branches.append(branch)
        return {self.layer: CountingProcessor(originals[self.layer], self.processor_calls)} if branch == GENERATED else {}

    def unet_kwargs(self, state):
        self.kwargs_calls += 1
        return {"added_cond_kwargs": {}}  # merged with the engine's image_embeds: nothing lost

    def before_step(self, state):
        self.steps.append(("before", state.branch, state.step, int(state.timestep)))
        return state.latents

    def after_step(self, state):
        self.steps.append(("after", state.branch, state.step, int(state.timestep)))
        if state.branch == GENERATED and state.step == state.steps - 1:
            for _ in range(self.extra_passes(state.steps)):  # the passes it declared, done
                self.run.progress.check()
                self.run.progress.advance()
        return state.latents

    def extra_passes(self, steps):
        return 2

    def record(self):
        return {"recorder_steps": len(self.steps)}


@pytest.fixture
def recorder(monkeypatch):
    made = []

    def factory(params, spec, settings):
        made.append(StepRecorder())
        return made[-1]

    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, factory])
    return made


def _gen(tiny_models, reference, **kw):
    args = dict(engine="diffusion", variants=1, seed=0, steps=STEPS, size=SIZE, appearance="none") | kw
    return generate_variants(reference, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                             **args)


def test_a_control_added_through_the_contract_runs_at_every_step(tiny_models, reference, pipe, recorder):
    original = dict(pipe.unet.attn_processors)
    totals = []
    image = _gen(tiny_models, reference, on_step=lambda done, total, preview: totals.append((done, total)))[0]
    (control,) = recorder
    timesteps = [t for kind, branch, step, t in control.steps if kind == "before"]
    assert [(kind, step) for kind, _, step, _ in control.steps] == [
        (kind, i) for i in range(STEPS) for kind in ("before", "after")]
    assert {branch for _, branch, _, _ in control.steps} == {GENERATED}
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == STEPS  # DDIM, noisiest first
    assert control.kwargs_calls == STEPS  # one UNet pass per step (appearance none: no reference work)
    assert control.branches == [GENERATED] and len(control.processor_calls) == STEPS  # CFG: one batched pass
    assert dict(pipe.unet.attn_processors) == original  # its processor is gone again
    assert totals[-1] == (STEPS + 2, STEPS + 2)  # its declared passes are counted
    assert json.loads(image.info["parameters"])["recorder_steps"] == 2 * STEPS


def test_a_control_that_changes_nothing_changes_no_pixel(tiny_models, reference, monkeypatch):
    plain = np.asarray(_gen(tiny_models, reference)[0])
    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, lambda params, spec, settings: StepRecorder()])
    with_control = np.asarray(_gen(tiny_models, reference)[0])
    assert np.array_equal(plain, with_control)


def test_controls_see_the_reference_branch_when_kv_asks_for_it(tiny_models, reference, recorder):
    from backend.diffusion import engine as diffusion

    diffusion.reference_cache.clear()
    _gen(tiny_models, reference, appearance="kv")
    (control,) = recorder
    window = sorted(balance.settings().window_steps(STEPS))  # the reference branch runs the window only
    assert window and len(window) < STEPS
    assert control.branches == ["inversion", "reference", GENERATED]
    assert [branch for kind, branch, _, _ in control.steps if kind == "before"] == ["reference"] * len(window) + [
        GENERATED] * STEPS
    assert [step for kind, branch, step, _ in control.steps if kind == "before" and branch == "reference"] == window
    assert control.kwargs_calls == 2 * len(window) + STEPS  # inversion and reference to the window, generated


def test_a_control_reading_the_reference_at_every_step_gets_the_whole_reference_branch(tiny_models, reference,
                                                                                      monkeypatch):
    """Controls that need the reference and do not narrow `reference_steps` get the full replay, and the
    reference work of another start step is cached apart (kv alone starts at its window)."""
    from backend.diffusion import engine as diffusion

    class WholeReference(StepRecorder):
        def needs_reference(self):
            return True

    made = []
    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, lambda *a: made.append(WholeReference()) or made[-1]])
    diffusion.reference_cache.clear()
    before = dict(diffusion.counters)
    _gen(tiny_models, reference, appearance="kv")
    assert [step for kind, branch, step, _ in made[0].steps if kind == "before" and branch == "reference"] == list(
        range(STEPS))
    assert made[0].kwargs_calls == 3 * STEPS
    _gen(tiny_models, reference, appearance="kv")  # the same call again: everything cached
    assert made[1].kwargs_calls == STEPS
    assert diffusion.counters["reference_branches"] == before["reference_branches"] + 1


def test_two_controls_setting_the_same_unet_argument_is_an_error(tiny_models, reference, monkeypatch):
    class Residuals(Control):
        def unet_kwargs(self, state):
            return {"mid_block_additional_residual": torch.zeros(1)}

    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, lambda *a: Residuals(), lambda *a: Residuals()])
    with pytest.raises(ValueError, match="mid_block_additional_residual"):
        _gen(tiny_models, reference)
