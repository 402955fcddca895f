"""What a level of the direct search means here: a per-layer sparsity step around a base allocation
(the generic search over integer vectors is :class:`gp.direct.DirectSearch`).

Layer ``l`` at level ``k`` gets sparsity ``base[l] + k·step_l`` with ``step_l = step · mean(counts) / counts[l]``
(one level moves the same number of weights in every layer, as EvoPress's fixed ``weights_diff``), so levels
summing to 0 keep the parameter-weighted mean of ``base`` (the target) exactly; levels stop where a layer's
sparsity would leave ``[lo, hi]``.
"""
from __future__ import annotations

import math

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from dsa.errors import UserError

MIN_LEVEL_STEP = 1e-4  # allocations are cached and compared to 4 decimals: a smaller level moves nothing


class LevelSpace:
    """Levels ↔ sparsities around ``base`` (float64 [L]) for layers of ``counts`` weights, within [lo, hi]
    (a :class:`gp.direct.IntegerSpace`)."""

    def __init__(self, base, counts, step: float, max_level: int, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY):
        self.base = torch.as_tensor(base, dtype=torch.float64)
        counts = torch.as_tensor(counts, dtype=torch.float64)
        self.steps = step * counts.mean() / counts
        self.lo, self.hi = lo, hi
        eps = 1e-12  # a level whose sparsity lands on a bound (up to rounding) is allowed
        self.low = [max(-max_level, -math.floor((b - lo + eps) / s)) for b, s in zip(self.base.tolist(), self.steps.tolist())]
        self.high = [min(max_level, math.floor((hi - b + eps) / s)) for b, s in zip(self.base.tolist(), self.steps.tolist())]

    def __len__(self) -> int:
        return len(self.base)

    def decode(self, levels) -> torch.Tensor:
        """The layers' sparsities at ``levels``."""
        out = self.base + torch.as_tensor(levels, dtype=torch.float64) * self.steps
        return out.clamp(self.lo, self.hi)


class PatternLevels:
    """Levels on an N:M pattern (``--nm``; a :class:`gp.direct.IntegerSpace`): block ``l`` is at step
    ``base[l] + level[l]`` in ``0..top``, sparsity ``step·unit``. Mixed N:M with a fixed M: ``unit = 1/M``,
    ``top = M`` (a level moves N by one); dense or N:M: ``unit = N/M``, ``top = 1`` (a level switch swaps a
    dense block with an N:M one). On blocks of equal size, level switches keep the mean sparsity exactly."""

    def __init__(self, base: list[int], unit: float, top: int, max_level: int):
        self.base, self.unit = [int(b) for b in base], float(unit)
        self.low = [max(-max_level, -b) for b in self.base]
        self.high = [min(max_level, top - b) for b in self.base]

    def __len__(self) -> int:
        return len(self.base)

    def decode(self, levels) -> torch.Tensor:
        return torch.tensor([(b + int(v)) * self.unit for b, v in zip(self.base, levels)], dtype=torch.float64)


def level_step(target: float, step: float | None = None) -> float:
    """The direct search's sparsity per level: ``step`` if given, else EvoPress's resolution
    ``min(s, 1 − s)/16`` (the one home of this default: ``dsa search`` and ``dsa compare`` read it)."""
    return step or min(target, 1 - target) / 16


def check_level_step(target: float, step: float | None = None) -> None:
    """UserError when the direct search could not move with this level step (``--level-step``): a level
    must change a sparsity visibly (≥ MIN_LEVEL_STEP) and fit at least once each way in [0, MAX_SPARSITY]."""
    value, room = level_step(target, step), min(target, MAX_SPARSITY - target)
    if not MIN_LEVEL_STEP <= value <= room:
        raise UserError(f"--level-step {value:g}: the direct search cannot move at sparsity {target:g} (a level "
                        f"must be in [{MIN_LEVEL_STEP:g}, {room:.4g}])")
