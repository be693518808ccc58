"""The reference and generated branches stepped together, window by window, above the window size.

Run one after the other (the reference branch first, then the generated one), the reference's
recordings are kept for every window of every recorded step: they grow with the area (for SD1.5's
default kv layers 47 MB per window and step in float32, tens of GB at 4096 px). Every control
reads a recording at the step (and window) it was made in, so the branches can also go together:
at each step the reference branch predicts a window and the generated branch predicts the same
window at once, reading what was just recorded. Then what was recorded in the window can be
dropped before the next one is recorded, and what was recorded by the step (latents for keep-outside,
restyle's start) after the step: the recordings stay those of one window and one step, whatever the
area.

The recordings are still kept for the reference cache (later variants of the texture skip the
reference branch) when they fit its budget: from the first window's recording, which is the
largest of any window and step (every window has the same size; the controls record in a prefix or
a suffix of the steps, most in the first one), the whole call's is bounded by that times the windows
and the recorded steps. A call whose recordings would pass the budget drops them as it goes and
keeps only the inversion. Both orders compute the same thing: the reference branch never reads the
generated one.
"""

from __future__ import annotations

import torch

from backend.diffusion.controls.base import GENERATED, REFERENCE
from backend.diffusion.loop import _clean
from backend.diffusion.reference_cache import nbytes

# the most bytes the recordings held at once in the last paired call (tests, benchmarks)
peak = {"recorded_bytes": 0}


def _drop(recordings: dict, before: set) -> None:
    for key in set(recordings) - before:
        del recordings[key]


def _hooks(loop, branch: str, name: str, step: int, t, latents: torch.Tensor) -> torch.Tensor:
    """The controls' `name` hooks of one branch at `step`."""
    state = loop.state
    with loop.branch(branch):
        state.step, state.timestep, state.latents = step, t, latents
        return loop._hook(name)


class _Paired:
    """One paired call's bookkeeping: the step being taken and whether the recordings are kept."""

    def __init__(self, loop, recordings: dict, budget: int, recorded_steps: int):
        self.loop, self.recordings, self.budget, self.recorded_steps = loop, recordings, budget, recorded_steps
        self.keep: bool | None = None  # decided at the first recorded window
        self.call_start = set(recordings)
        self.step, self.t, self.t_ref, self.paired, self.guidance = 0, None, None, False, 1.0
        peak["recorded_bytes"] = nbytes(recordings)

    def _pass(self, branch: str, crop: torch.Tensor, t, guidance: float) -> torch.Tensor:
        loop = self.loop
        with loop.branch(branch):
            loop.state.step, loop.state.timestep = self.step, t
            return loop._eps(crop, t, guidance)

    def window(self, crop: torch.Tensor, index: int) -> torch.Tensor:
        """The noise predictions of window `index`: (reference, generated) when paired."""
        state, recordings = self.loop.state, self.recordings
        state.window, state.cells = index, self.loop.layout.tiles()[index]
        if not self.paired:
            return self._pass(GENERATED, crop, self.t, self.guidance)
        before = set(recordings)
        eps_ref = self._pass(REFERENCE, crop[:1], self.t_ref, 1.0)
        eps = self._pass(GENERATED, crop[1:], self.t, self.guidance)
        held = nbytes(recordings)
        peak["recorded_bytes"] = max(peak["recorded_bytes"], held)
        if self.keep is None:  # the first window's recording bounds every other's
            new = nbytes({key: recordings[key] for key in set(recordings) - before})
            self.keep = held + new * (len(self.loop.layout) * self.recorded_steps - 1) <= self.budget
        if self.keep and held > self.budget:  # all recorded so far has been read: stream from here
            self.keep = False
            _drop(recordings, self.call_start)
        if not self.keep:
            _drop(recordings, before)
        return torch.cat([eps_ref, eps])


def denoise_paired(loop, reference: torch.Tensor, latents: torch.Tensor, guidance: float, start: int,
                   recordings: dict, budget: int, previews: bool = False) -> tuple[torch.Tensor, bool]:
    """The generated branch from pure noise `latents` (step 0) and the reference branch from
    `reference` (at the level of step `start`), stepped together over `loop.layout`'s windows from
    `start` on. Returns (the generated latents, whether the recordings were kept: they fit `budget`)."""
    state, layout, progress = loop.state, loop.layout, loop.progress
    ref_sched, gen_sched, gen_kwargs = loop.reference, loop.forward, loop.schedulers.generated_kwargs
    loop.schedulers.reset()
    run = _Paired(loop, recordings, budget, len(ref_sched.timesteps) - start)
    run.guidance = guidance
    for i in range(len(gen_sched.timesteps)):
        run.step, run.t, run.t_ref, run.paired = i, gen_sched.timesteps[i], ref_sched.timesteps[i], i >= start
        progress.check()
        step_start = set(recordings)
        if run.paired:
            reference = _hooks(loop, REFERENCE, "before_step", i, run.t_ref, reference)
        latents = _hooks(loop, GENERATED, "before_step", i, run.t, latents)
        try:
            eps = layout.blend(torch.cat([reference, latents]) if run.paired else latents, run.window)
        finally:
            state.window = state.cells = None
        if run.paired:
            eps_ref, eps = eps[:1], eps[1:]
            out = ref_sched.step(eps_ref, run.t_ref, reference)
            progress.advance()
            reference = _hooks(loop, REFERENCE, "after_step", i, run.t_ref, out.prev_sample)
        out = gen_sched.step(eps, run.t, latents, **gen_kwargs)
        progress.advance(loop.preview(_clean(out, gen_sched, latents, eps, run.t)) if previews else None)
        latents = _hooks(loop, GENERATED, "after_step", i, run.t, out.prev_sample)
        if not run.keep:
            _drop(recordings, step_start)
    return latents, bool(run.keep)
