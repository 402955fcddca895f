"""Perplexity over fixed token windows (Wanda/SparseGPT convention), and the KL divergence of a pruned
model's next-token distributions from the dense model's (EvoPress's fitness).

The LM head runs on ``chunk`` positions at a time, so the ``[tokens, vocab]`` logits (0.4 GB per
2048-token window for SmolLM2's 49k vocabulary, 2.1 GB for Gemma-3's 262k, in fp32) never exist
at once. This needs logits = ``head(decoder(ids))`` (optionally soft-capped, as Gemma); the first
call checks that on the model's first window against its own forward, and a model that does
something else keeps the plain full-logits path.

KL: the dense model's distributions are cached once per window as their ``k`` most likely tokens plus
one "rest" bucket (the remaining mass), so the cache stays small (a 262k vocabulary × 2048 positions
would be 2 GB per window). The divergence is then that of the two coarse-grained distributions over
the dense top ``k`` and the rest: KL(P‖Q) restricted to that partition, a lower bound of the full
KL that equals it when ``k`` is the vocabulary size (tested).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evaluators.data.calibration import model_device

CHUNK = 512  # LM-head positions per step
_SPLIT_OK = "_dsa_head_split_ok"  # model attribute: result of the one-time check


def _full_nlls(model, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch, use_cache=False).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="none")
    return nll.view(batch.shape[0], -1).double().mean(dim=1)


def _parts(model):
    """(decoder, head, softcap) of a standard causal LM, or None. For an image-text model (LLaVA) the
    decoder is its language model, so text-only logits are ``head(decoder(ids))`` too."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head, getattr(_text_config(model.config), "final_logit_softcapping", None)


def _text_config(config):
    """The language model's config: ``text_config`` of an image-text model (LLaVA), else the config."""
    try:
        return config.get_text_config()
    except AttributeError:  # transformers without get_text_config
        return getattr(config, "text_config", None) or config


def _logits(model, parts, batch: torch.Tensor, chunk: int | None):
    """``(i, j, logits)``: float32 logits ``[batch, j − i, vocab]`` predicting tokens ``i+1 … j`` of each
    window, chunk by chunk through the LM head when ``parts`` (decoder, head, softcap), else at once."""
    if parts is None:
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        yield 0, logits.shape[1], logits
        return
    decoder, head, cap = parts
    hidden = decoder(input_ids=batch, use_cache=False)[0]
    n = batch.shape[1] - 1
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        logits = head(hidden[:, i:j]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        yield i, j, logits


def _chunked_nlls(parts, batch: torch.Tensor, chunk: int) -> torch.Tensor:
    n = batch.shape[1] - 1
    total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
    for i, j, logits in _logits(None, parts, batch, chunk):
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


def _batches(model, windows: torch.Tensor, batch_size: int, chunk: int | None, progress: bool, desc: str):
    """``(start, batch on the model's device, parts)`` per batch of windows; ``parts`` as :func:`_logits` takes."""
    device = model_device(model)
    parts = None
    if chunk and windows.shape[1] - 1 > chunk:
        parts = _chunk_parts(model, windows[:1].to(device), chunk)
    for start in tqdm(range(0, windows.shape[0], max(1, batch_size)), desc=desc, disable=not progress):
        yield start, windows[start:start + batch_size].to(device), parts


@torch.inference_mode()
def window_nlls(model, windows: torch.Tensor, batch_size: int = 1, progress: bool = False,
                chunk: int | None = CHUNK) -> torch.Tensor:
    """Mean next-token NLL of each window (float64 tensor ``[n]``); each window is its own context.

    ``chunk``: LM-head positions per step (None: all logits at once)."""
    out = []
    for _, batch, parts in _batches(model, windows, batch_size, chunk, progress, "perplexity"):
        out.append((_full_nlls(model, batch) if parts is None else _chunked_nlls(parts, batch, chunk)).cpu())
    return torch.cat(out)


@torch.inference_mode()
def token_scores(model, windows: torch.Tensor, reference: list | None = None, batch_size: int = 1,
                 progress: bool = False, chunk: int | None = CHUNK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over ``windows``: every next-token NLL (float64 ``[n, seqlen − 1]``; column ``t`` predicts
    token ``t + 1``) and, with a ``reference`` (:func:`dense_reference` on the same windows), each window's
    mean KL(dense ‖ model) as :func:`window_kls` computes it (else None). What a fitness that weighs
    tokens differently (:func:`known_nlls`) or several fitnesses at once read."""
    nlls, kls = [], []
    for start, batch, parts in _batches(model, windows, batch_size, chunk, progress, "scores"):
        rows = torch.zeros(batch.shape[0], batch.shape[1] - 1, dtype=torch.float64)
        total = torch.zeros(batch.shape[0], dtype=torch.float64)
        for i, j, logits in _logits(model, parts, batch, chunk):
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, i + 1:j + 1].reshape(-1),
                                  reduction="none")
            rows[:, i:j] = nll.view(batch.shape[0], -1).double().cpu()
            if reference is not None:
                top_p, ids = _reference_batch(reference, start, batch)
                total += _kl_sum(logits, top_p[:, i:j], ids[:, i:j]).cpu()
        nlls.append(rows)
        kls.append(total / (batch.shape[1] - 1))
    return torch.cat(nlls), (torch.cat(kls) if reference is not None else None)


def known_nlls(token_nlls: torch.Tensor, ignore: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL sum, token count) per window over the targets that ``ignore`` (bool ``[n, seqlen]``, e.g.
    :func:`evaluators.data.text.marker_tokens`) does not mark; ``token_nlls`` from :func:`token_scores`."""
    keep = ~ignore[:, 1:].to(torch.bool)
    return (token_nlls * keep).sum(dim=1), keep.sum(dim=1).to(torch.float64)


def _reference_batch(reference: list, start: int, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense top-k log-probabilities and token ids of the windows ``start …`` in ``batch``, on its device."""
    rows = range(start, start + batch.shape[0])
    return (torch.stack([reference[r][0] for r in rows]).to(batch.device),
            torch.stack([reference[r][1] for r in rows]).to(batch.device))


def _kl_sum(logits: torch.Tensor, top_p: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per window, the summed KL(dense ‖ model) over these positions, over the dense top-k tokens and the rest."""
    logq = torch.log_softmax(logits.double(), dim=-1)  # KLs are small differences: float64
    q = logq.gather(-1, ids)
    rest_p, rest_q = _log_rest(top_p), _log_rest(q)
    kl = (top_p.exp() * (top_p - q)).sum(dim=-1) + rest_p.exp() * (rest_p - rest_q)
    return kl.double().sum(dim=1)


def _log_rest(logp_top: torch.Tensor) -> torch.Tensor:
    """log(1 − Σ exp(logp_top)) over the last dimension: the log-mass outside the top tokens."""
    return torch.log((1.0 - logp_top.exp().sum(dim=-1)).clamp_min(1e-30))


@torch.inference_mode()
def dense_reference(model, windows: torch.Tensor, k: int = 256, batch_size: int = 1,
                    chunk: int | None = CHUNK) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per window, the model's top-``k`` next-token log-probabilities (float64) and their token ids (CPU
    tensors ``[positions, k]``): the reference that :func:`window_kls` compares a pruned model with."""
    out = []
    for _, batch, parts in _batches(model, windows, batch_size, chunk, False, "reference"):
        tops, ids = [], []
        for _, _, logits in _logits(model, parts, batch, chunk):
            top, idx = torch.log_softmax(logits.double(), dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
            tops.append(top.cpu())
            ids.append(idx.cpu())
        top, idx = torch.cat(tops, dim=1), torch.cat(ids, dim=1)
        out.extend(zip(top.unbind(0), idx.unbind(0)))
    return out


@torch.inference_mode()
def window_kls(model, windows: torch.Tensor, reference: list, batch_size: int = 1, progress: bool = False,
               chunk: int | None = CHUNK) -> torch.Tensor:
    """Mean per-token KL(dense ‖ model) of each window (float64 ``[n]``), over the dense top-k tokens and
    the rest (``reference`` from :func:`dense_reference` on the same windows)."""
    out = []
    for start, batch, parts in _batches(model, windows, batch_size, chunk, progress, "KL"):
        total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
        top_p, ids = _reference_batch(reference, start, batch)
        for i, j, logits in _logits(model, parts, batch, chunk):
            total += _kl_sum(logits, top_p[:, i:j], ids[:, i:j])
        out.append((total / (batch.shape[1] - 1)).cpu())
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
