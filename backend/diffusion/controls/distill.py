"""Attention distillation (AD): appearance by optimising the generated latent, not by swapping K/V.

In the kv window, before each scheduler step the generated latent is refined by a few Adam
iterations on the AD loss (Zhou et al., "Attention Distillation", CVPR 2025):

    L = sum over the kv layers of  mean | Attn(Q_gen, K_gen, V_gen) - sg[Attn(Q_gen, K_ref, V_ref)] |

(the per-head attention outputs, before the output projection; sg = no gradient). K_ref/V_ref are
the reference branch's, recorded and cached exactly as for kv replacement. The loss pass runs the
UNet through its installed processors (so IP-Adapter's cross-attention stays on, unlike the public
implementation, which calls its own attention code), conditional half only (guidance does not
enter the loss). Gradients reach only the latent: the UNet's weights are frozen for the pass, and it
stops at the last distilled layer (DistillationPassDone), so nothing after it is computed or kept.

The noise level: at step i the loop's latent is at level t_i (the step's input), the reference K/V
of step i were recorded from the reference branch's latent at t_i, and the loss pass runs the UNet
at t_i. So the refinement happens before the step (the authors' `AD()` does the same), and the
step then denoises the refined latent. Refining after the step would put the latent at t_{i+1}
and need the K/V of step i+1, which the window's last step does not have.

fp16: a per-layer mean over ~10^6 elements gives per-element gradients near 1e-7, fp16's subnormal
range, where most of the gradient is lost. The layer terms are computed in fp32 and their sum is
multiplied by the latent's pixel count (the token count of the largest distilled layer) before
backward, which moves those gradients to ~1e-3; Adam is invariant to a constant scale of the loss.

With tiling the optimisation keeps outputs exactly periodic: the UNet is shift-equivariant, the
target and the mean L1 loss are equivariant/invariant under a roll of the latent, and Adam is
elementwise, so a rolled latent gets the rolled update.

Cost: iterations forward+backward passes (to the last up-block) per window step, on top of the
usual passes (roughly 2-3x a forward each).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from backend.diffusion.balance import KVSettings
from backend.diffusion.controls.attention import Projection, ReferenceAttention
from backend.diffusion.controls.base import GENERATED, StepState
from backend.diffusion.controls.kv import KVReplacement

DISTILL = "distill"  # the branch name of the loss passes


class DistillationPassDone(Exception):
    """Raised by the last distilled layer: the UNet pass can stop there (saves time and memory)."""

class Distill(ReferenceAttention):
    """Own attention, plus this layer's L1 term against the attention with the reference K/V."""

    action = "distill"

    def __init__(self, layer, kv, original, losses: list):
        super().__init__(layer, kv, original)
        self.losses = losses

    def active(self) -> bool:
        return self.kv.state.branch == DISTILL and self.kv.active()

    def attention(self, p: Projection) -> torch.Tensor:
        key, value = p.own_kv()
        self.kv.observe(self.layer, self.action, p.hidden, key, value)
        out = p.attend(key, value)
        ref_key, ref_value = self.kv.reference(self.layer, p.query.shape[0], p.query.dtype)
        with torch.no_grad():  # the target: the generated queries reading the reference's K/V, held fixed
            target = F.scaled_dot_product_attention(p.query.detach(), ref_key, ref_value, attn_mask=p.mask)
        self.losses.append(F.l1_loss(out.float(), target.float()))  # fp32: see the module's fp16 note
        if len(self.losses) == len(self.kv.layers):
            raise DistillationPassDone  # the rest of the UNet does not feed the loss
        return out


def loss_scale(latents: torch.Tensor) -> float:
    """The constant the AD loss is multiplied by before backward: the latent's pixel count, which is
    the token count of up_blocks.3's layers (see the module's fp16 note)."""
    return float(latents.shape[-2] * latents.shape[-1])


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


class AttentionDistillation(KVReplacement):
    """Records the reference K/V like kv replacement; the generated branch keeps its own attention and
    its latents are refined before each window step."""

    def __init__(self, settings: KVSettings, steps: int, iterations: int, lr: float):
        super().__init__(settings, steps)
        self.iterations, self.lr = iterations, lr
        self.losses: list[torch.Tensor] = []

    def generated_processors(self, originals: dict) -> dict:
        return {layer: Distill(layer, self.kv, originals[layer], self.losses) for layer in self.kv.layers}

    def extra_passes(self, steps: int) -> int:
        return len(self.window) * self.iterations

    def before_step(self, state: StepState) -> torch.Tensor:
        """Inside the window, refine the step's input latents (level t_i) at its timestep t_i, against
        the K/V recorded at step i; one progress tick per iteration, cancel checked before each."""
        if state.branch != GENERATED or state.step not in self.window or self.iterations == 0:
            return state.latents
        text, image = self.run.cond.batch(state.latents.shape[0], guided=False)
        progress = self.run.progress
        return self.optimise(state.latents, state.timestep, state.step, text, image,
                             before_iteration=progress.check, after_iteration=lambda k, loss: progress.advance())

    def loss(self, latents: torch.Tensor, t, step: int, text, image_embeds) -> torch.Tensor:
        """The AD loss of `latents` at `step` (one UNet pass up to the last distilled layer)."""
        state = self.kv.state
        branch, state.branch, state.step = state.branch, DISTILL, step
        self.losses.clear()
        try:
            self.run.pipe.unet(latents, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": image_embeds})
        except DistillationPassDone:
            pass
        finally:
            state.branch = branch
        if len(self.losses) != len(self.kv.layers):
            raise RuntimeError(f"AD pass reached {len(self.losses)} of {len(self.kv.layers)} layers")
        loss = torch.stack(self.losses).sum()
        self.losses.clear()
        return loss

    def optimise(self, latents: torch.Tensor, t, step: int, text, image_embeds, *, before_iteration=None,
                 after_iteration=None) -> torch.Tensor:
        """`iterations` Adam steps on the AD loss; returns the refined latents (detached).

        `after_iteration(iteration, loss)` gets the loss each iteration started from (progress, tests).
        """
        work = latents.detach().float().clone().requires_grad_(True)  # Adam state in fp32 even for fp16 models
        optimiser = torch.optim.Adam([work], lr=self.lr)
        with torch.enable_grad(), frozen(self.run.pipe.unet):
            for i in range(self.iterations):
                if before_iteration is not None:
                    before_iteration()
                optimiser.zero_grad(set_to_none=True)
                loss = self.loss(work.to(latents.dtype), t, step, text, image_embeds)
                (loss * loss_scale(latents)).backward()
                optimiser.step()
                if after_iteration is not None:
                    after_iteration(i, float(loss.detach()))
        return work.detach().to(latents.dtype)

    def record(self) -> dict:
        return super().record() | {"ad_iterations": self.iterations, "ad_lr": self.lr}


def from_params(params, spec, settings: KVSettings):
    if params.appearance != "ad":
        return None
    return AttentionDistillation(settings, params.steps, params.diffusion.ad_iterations, float(params.diffusion.ad_lr))
