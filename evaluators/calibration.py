"""Calibration activations: per-linear input statistics (forward hooks) and decoder-block inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .models import decoder_blocks, model_linears


@dataclass
class LinearStats:
    """Input statistics of one linear over the calibration tokens.

    ``sq_norm[j] = Σ_tokens x_j²`` (float64), ``nsamples`` = number of tokens, ``hessian`` =
    ``2/n Σ x xᵀ`` (float32, SparseGPT's H with n = tokens) when asked for. The token-count
    normalisation is the same for every linear, so cross-layer score comparisons are unaffected.
    """

    sq_norm: torch.Tensor
    nsamples: int = 0
    hessian: torch.Tensor | None = None


class StatsCollector:
    """Context manager: forward hooks that accumulate :class:`LinearStats` for the given linears."""

    def __init__(self, linears: dict[str, nn.Linear], need_hessian: bool = False):
        self.linears = linears
        self.need_hessian = need_hessian
        self.handles: list = []
        self._stats: dict[str, LinearStats] = {}
        for name, lin in linears.items():
            dev = lin.weight.device
            self._stats[name] = LinearStats(
                sq_norm=torch.zeros(lin.in_features, dtype=torch.float64, device=dev),
                hessian=torch.zeros(lin.in_features, lin.in_features, device=dev) if need_hessian else None)

    def _hook(self, name: str):
        st = self._stats[name]

        def hook(module, args, output):
            x = args[0].detach().reshape(-1, module.in_features).float()
            st.sq_norm += torch.sum(x * x, dim=0, dtype=torch.float64)
            st.nsamples += x.shape[0]
            if st.hessian is not None:
                st.hessian.addmm_(x.T, x)
        return hook

    def __enter__(self) -> StatsCollector:
        self.handles = [lin.register_forward_hook(self._hook(n)) for n, lin in self.linears.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def stats(self) -> dict[str, LinearStats]:
        """The accumulated statistics (hessian scaled by 2/n); call once, after the forwards."""
        out = {}
        for name, st in self._stats.items():
            h = st.hessian * (2.0 / max(st.nsamples, 1)) if st.hessian is not None else None
            out[name] = LinearStats(st.sq_norm, st.nsamples, h)
        return out


class _Stop(Exception):
    """Raised from a hook to end a forward pass early."""


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(ids: torch.Tensor, batch_size: int):
    for start in range(0, ids.shape[0], max(1, batch_size)):
        yield ids[start:start + batch_size]


def _forward_batches(model: nn.Module, calib_ids: torch.Tensor, batch_size: int, handle) -> None:
    """Run the model on each batch until ``handle``'s hook raises ``_Stop``; then remove the hook."""
    try:
        for batch in _batches(calib_ids, batch_size):
            try:
                model(batch.to(model_device(model)), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()


@torch.inference_mode()
def run_through_blocks(model: nn.Module, calib_ids: torch.Tensor, batch_size: int = 1) -> None:
    """Forward the calibration windows up to the end of the last decoder block (no LM head)."""
    last = decoder_blocks(model)[-1]

    def stop(module, args, output):
        raise _Stop

    _forward_batches(model, calib_ids, batch_size, last.register_forward_hook(stop))


def collect_stats(model: nn.Module, calib_ids: torch.Tensor, need_hessian: bool,
                  batch_size: int = 1) -> dict[str, LinearStats]:
    """Input statistics of every decoder-block linear of the (dense) model, in one forward pass.

    Keys are qualified linear names (``model.layers.0.self_attn.q_proj``). The hessians take
    ``4·in²`` bytes per linear (small for SmolLM2; ~1.6 GB in total for a 7B LLaMA).
    """
    linears = {k: v for block in model_linears(model) for k, v in block.items()}
    with StatsCollector(linears, need_hessian) as collector:
        run_through_blocks(model, calib_ids, batch_size)
    return collector.stats()


@torch.inference_mode()
def capture_block_inputs(model: nn.Module, calib_ids: torch.Tensor,
                         batch_size: int = 1) -> list[tuple[torch.Tensor, dict]]:
    """Per calibration batch, the hidden states entering decoder block 0 and the keyword arguments
    the model passes to its blocks (attention mask, position ids, ``position_embeddings``, ...)."""
    first = decoder_blocks(model)[0]
    captured: list[tuple[torch.Tensor, dict]] = []

    def catch(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, kwargs))
        raise _Stop

    _forward_batches(model, calib_ids, batch_size, first.register_forward_pre_hook(catch, with_kwargs=True))
    return captured


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """One decoder block forward (transformers 5 blocks return a tensor, older ones a tuple)."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out
