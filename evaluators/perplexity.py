"""Perplexity over fixed token windows (Wanda/SparseGPT convention).

The LM head runs on ``chunk`` positions at a time, so the ``[tokens, vocab]`` logits (0.4 GB per
2048-token window for SmolLM2's 49k vocabulary, 2.1 GB for Gemma-3's 262k, in fp32) never exist
at once. This needs logits = ``head(decoder(ids))`` (optionally soft-capped, as Gemma); the first
call checks that on the model's first window against its own forward, and a model that does
something else keeps the plain full-logits path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .calibration import model_device

CHUNK = 512  # LM-head positions per step
_SPLIT_OK = "_dsa_head_split_ok"  # model attribute: result of the one-time check


def _full_nlls(model, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch, use_cache=False).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="none")
    return nll.view(batch.shape[0], -1).double().mean(dim=1)


def _parts(model):
    """(decoder, head, softcap) of a standard causal LM, or None."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head, getattr(model.config, "final_logit_softcapping", None)


def _chunked_nlls(parts, batch: torch.Tensor, chunk: int) -> torch.Tensor:
    decoder, head, cap = parts
    hidden = decoder(input_ids=batch, use_cache=False)[0]
    n = batch.shape[1] - 1
    total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        logits = head(hidden[:, i:j]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, i + 1:j + 1].reshape(-1), reduction="none")
        total += nll.view(batch.shape[0], -1).double().sum(dim=1)
    return total / n


def _chunk_parts(model, first: torch.Tensor, chunk: int):
    """The model's (decoder, head, softcap) when chunked NLLs equal its own on ``first`` (checked once
    per model), else None."""
    parts = _parts(model)
    ok = getattr(model, _SPLIT_OK, None)
    if ok is None:
        ok = parts is not None and torch.allclose(_chunked_nlls(parts, first, chunk), _full_nlls(model, first),
                                                  rtol=1e-4, atol=1e-6, equal_nan=True)
        object.__setattr__(model, _SPLIT_OK, ok)  # a plain attribute, not a submodule or buffer
    return parts if ok else None


@torch.inference_mode()
def window_nlls(model, windows: torch.Tensor, batch_size: int = 1, progress: bool = False,
                chunk: int | None = CHUNK) -> torch.Tensor:
    """Mean next-token NLL of each window (float64 tensor ``[n]``); each window is its own context.

    ``chunk``: LM-head positions per step (None: all logits at once)."""
    device = model_device(model)
    parts = None
    if chunk and windows.shape[1] - 1 > chunk:
        parts = _chunk_parts(model, windows[:1].to(device), chunk)
    out = []
    starts = range(0, windows.shape[0], max(1, batch_size))
    for start in tqdm(starts, desc="perplexity", disable=not progress):
        batch = windows[start:start + batch_size].to(device)
        out.append((_full_nlls(model, batch) if parts is None else _chunked_nlls(parts, batch, chunk)).cpu())
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
