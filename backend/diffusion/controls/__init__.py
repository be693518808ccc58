"""The controls of the diffusion loop, one module each (the contract: controls/base.py).

- kv.py: kv replacement (appearance "kv"), attention.py its record/replace processors;
- distill.py: attention distillation (appearance "ad");
- style.py: InstantStyle (ip_mode "style", suppress_content);
- sketch.py: sketch guidance by the Latent Guidance Predictor (sketch_mode "lgp");
- controlnet.py: sketch guidance by an SD1.5 ControlNet (sketch_mode "controlnet");
- restyle.py: restyle by text keeping the structure (restyle_prompt, masks), pnp.py its
  Plug-and-Play feature injection;
- inpaint.py: edit-inside (only the masked part generated), restyle's mode and a control that
  callers build themselves (engine.generate(..., extra_controls=...): tile sets).

A factory takes (params, model spec, kv settings) and returns a control, or None when the request
does not ask for it. Adding a control = a module with a factory, listed in FACTORIES.
"""

from __future__ import annotations

from backend.diffusion.controls import controlnet, distill, kv, restyle, sketch, style

FACTORIES = [kv.from_params, distill.from_params, style.from_params, sketch.from_params, controlnet.from_params,
             restyle.from_params]


def build(params, spec, settings) -> list:
    """The controls `params` asks for, in FACTORIES order (the order their hooks run in)."""
    return [control for factory in FACTORIES if (control := factory(params, spec, settings)) is not None]
