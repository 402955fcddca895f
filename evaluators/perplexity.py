"""Perplexity over fixed token windows (Wanda/SparseGPT convention)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .calibration import model_device


@torch.inference_mode()
def window_nlls(model, windows: torch.Tensor, batch_size: int = 1, progress: bool = False) -> torch.Tensor:
    """Mean next-token NLL of each window (float64 tensor ``[n]``); each window is its own context."""
    device = model_device(model)
    out = []
    starts = range(0, windows.shape[0], max(1, batch_size))
    for start in tqdm(starts, desc="perplexity", disable=not progress):
        batch = windows[start:start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits[:, :-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1),
                              reduction="none")
        out.append(nll.view(batch.shape[0], -1).double().mean(dim=1).cpu())
    return torch.cat(out)


def perplexity_from_nlls(nlls: torch.Tensor) -> float:
    """exp(mean window NLL); +inf when not finite or overflowing."""
    mean = float(nlls.mean())
    if not math.isfinite(mean) or mean > 700:
        return math.inf
    return math.exp(mean)


def perplexity(model, windows: torch.Tensor, batch_size: int = 1, progress: bool = False) -> float:
    """exp of the mean token NLL over all windows (all windows have the same length)."""
    return perplexity_from_nlls(window_nlls(model, windows, batch_size, progress))
