"""Helpers that apply a per-layer function to a score set (a ``[L, N]`` tensor or a list of 1-D tensors)."""
from __future__ import annotations

from typing import Callable

import torch

Scores = "torch.Tensor | list[torch.Tensor]"


def map_layers(fn: Callable[[torch.Tensor], torch.Tensor], scores):
    """Apply an element-wise or per-row (``dim=-1``) function to every layer's scores."""
    if isinstance(scores, torch.Tensor):
        return fn(scores)
    return [fn(s) for s in scores]


def reduce_layers(fn: Callable[[torch.Tensor], torch.Tensor], scores) -> torch.Tensor:
    """Reduce every layer's scores to one number (``fn`` reduces over ``dim=-1``): a float64 ``[L]``."""
    if isinstance(scores, torch.Tensor):
        out = fn(scores)
    else:
        out = torch.stack([fn(s) for s in scores])
    return out.detach().to(device="cpu", dtype=torch.float64)
