"""The structure/appearance balance: one number in [0, 1] mapped to the kv-replacement settings.

Denoising decides layout early and appearance late, so the balance sets how long, counted back
from the last step, the generated branch reads the reference's keys and values:

    window fraction = 2/3 * balance          (0.5 -> the final third: the published recipe)

The replaced layers (self-attention of up_blocks.2 and up_blocks.3) and the IP-Adapter scale (1.0)
stay at the recipe's values for every balance: the window alone moves the trade-off monotonically,
and nothing we could measure supports moving the others too. Both can still be set explicitly
(`ip_scale`, and the `kv_blocks` / `kv_window` extras of the Python API).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.params import GenerationParams

DEFAULT_BLOCKS = ("up_blocks.2", "up_blocks.3")  # the recipe: self-attention of the last two up-blocks
DEFAULT_IP_SCALE = 1.0
MAX_WINDOW_FRACTION = 2.0 / 3.0


@dataclass(frozen=True)
class KVSettings:
    window_fraction: float  # share of the denoising steps, counted from the end, with kv replacement
    blocks: tuple[str, ...]
    ip_scale: float

    def window_steps(self, steps: int) -> frozenset[int]:
        """Indices of the replaced steps: the last round(fraction * steps) of 0..steps-1."""
        count = round(self.window_fraction * steps + 1e-9)
        return frozenset(range(steps - count, steps))


def settings(balance: float = GenerationParams.balance, *, ip_scale: float | None = None,
             window: float | None = None, blocks: tuple[str, ...] | list[str] | None = None) -> KVSettings:
    """The kv settings for `balance` (values checked by backend.params); explicit `ip_scale`, `window`
    or `blocks` override the mapping."""
    return KVSettings(
        window_fraction=MAX_WINDOW_FRACTION * balance if window is None else float(window),
        blocks=DEFAULT_BLOCKS if blocks is None else tuple(blocks),
        ip_scale=DEFAULT_IP_SCALE if ip_scale is None else float(ip_scale),
    )
