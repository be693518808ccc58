"""Attention distillation (AD): appearance by optimising the generated latent, not by swapping K/V.

In the kv window, after each scheduler step the generated latent is refined by a few Adam
iterations on the AD loss (Zhou et al., "Attention Distillation", CVPR 2025):

    L = sum over the kv layers of  mean | Attn(Q_gen, K_gen, V_gen) - sg[Attn(Q_gen, K_ref, V_ref)] |

(the per-head attention outputs, before the output projection; sg = no gradient). K_ref/V_ref are
the reference branch's, recorded and cached exactly as for kv replacement. The loss pass runs the
UNet through its installed processors (so IP-Adapter's cross-attention stays on, unlike the public
implementation, which calls its own attention code), at the timestep the K/V were recorded at,
conditional half only (guidance does not enter the loss). Gradients reach only the latent: the
UNet's weights are frozen for the pass, and it stops at the last distilled layer
(DistillationPassDone), so nothing after it is computed or kept for backward.

With tiling the optimisation keeps outputs exactly periodic: the UNet is shift-equivariant, the
target and the mean L1 loss are equivariant/invariant under a roll of the latent, and Adam is
elementwise, so a rolled latent gets the rolled update.

Cost: iterations forward+backward passes (to the last up-block) per window step, on top of the
usual passes (roughly 2-3x a forward each).
"""

from __future__ import annotations

import contextlib

import torch

from backend.diffusion.kv_attention import DISTILL, DistillationPassDone, KVController

DEFAULT_ITERATIONS = 3  # the published texture-synthesis settings: a few Adam steps per step...
DEFAULT_LR = 0.05  # ...at this learning rate
MAX_ITERATIONS = 50


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter of `module` requires grad inside the block (autograd then keeps no weight grads
    and fewer activations); the previous flags come back afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def ad_loss(unet, latents: torch.Tensor, t, controller: KVController, step: int, encoder_hidden_states,
            image_embeds) -> torch.Tensor:
    """The AD loss of `latents` at `step` (one UNet pass up to the last distilled layer)."""
    controller.branch, controller.step = DISTILL, step
    controller.losses.clear()
    try:
        unet(latents, t, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={"image_embeds": image_embeds})
    except DistillationPassDone:
        pass
    finally:
        controller.branch = None
    if len(controller.losses) != len(controller.layers):
        raise RuntimeError(f"AD pass reached {len(controller.losses)} of {len(controller.layers)} layers")
    loss = torch.stack(controller.losses).sum()
    controller.losses.clear()
    return loss


def optimise_latents(unet, latents: torch.Tensor, t, controller: KVController, step: int, encoder_hidden_states,
                     image_embeds, *, iterations: int = DEFAULT_ITERATIONS, lr: float = DEFAULT_LR,
                     before_iteration=None, after_iteration=None) -> torch.Tensor:
    """`iterations` Adam steps on the AD loss; returns the refined latents (detached).

    `before_iteration()` runs before each iteration (the engine checks cancel there);
    `after_iteration(iteration, loss)` gets the loss each iteration started from (progress, tests).
    """
    work = latents.detach().float().clone().requires_grad_(True)  # Adam state in fp32 even for fp16 models
    optimiser = torch.optim.Adam([work], lr=lr)
    with torch.enable_grad(), frozen(unet):
        for i in range(iterations):
            if before_iteration is not None:
                before_iteration()
            optimiser.zero_grad(set_to_none=True)
            loss = ad_loss(unet, work.to(latents.dtype), t, controller, step, encoder_hidden_states, image_embeds)
            loss.backward()
            optimiser.step()
            if after_iteration is not None:
                after_iteration(i, float(loss.detach()))
    return work.detach().to(latents.dtype)
