"""Calibration activations: per-linear input statistics (forward hooks) and decoder-block inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from evaluators.models.loading import decoder_blocks, model_linears


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


def _forward_batches(model: nn.Module, calib_ids: torch.Tensor, batch_size: int, handle,
                     progress: bool = False) -> None:
    """Run the model on each batch until ``handle``'s hook raises ``_Stop``; then remove the hook."""
    try:
        for batch in tqdm(list(_batches(calib_ids, batch_size)), desc="calibration", disable=not progress):
            try:
                model(batch.to(model_device(model)), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()


@torch.inference_mode()
def run_through_blocks(model: nn.Module, calib_ids: torch.Tensor, batch_size: int = 1,
                       progress: bool = False) -> None:
    """Forward the calibration windows up to the end of the last decoder block (no LM head)."""
    last = decoder_blocks(model)[-1]

    def stop(module, args, output):
        raise _Stop

    _forward_batches(model, calib_ids, batch_size, last.register_forward_hook(stop), progress)


def collect_stats(model: nn.Module, calib_ids: torch.Tensor, need_hessian: bool,
                  batch_size: int = 1, progress: bool = False) -> dict[str, LinearStats]:
    """Input statistics of every decoder-block linear of the (dense) model, in one forward pass.

    Keys are qualified linear names (``model.layers.0.self_attn.q_proj``). The hessians take
    ``4·in²`` bytes per linear (float32): small for SmolLM2, but ~28 GB in total for a 7B LLaMA (32 blocks
    of 6 linears with 4096 inputs and a ``down_proj`` with 11008: 32·(6·4096² + 11008²)·4 bytes).
    """
    linears = {k: v for block in model_linears(model) for k, v in block.items()}
    with StatsCollector(linears, need_hessian) as collector:
        run_through_blocks(model, calib_ids, batch_size, progress)
    return collector.stats()


def _block_hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a block is called with; removes them from ``kwargs`` when passed by keyword."""
    return args[0] if args else kwargs.pop("hidden_states")


@torch.inference_mode()
def capture_block_inputs(model: nn.Module, calib_ids: torch.Tensor,
                         batch_size: int = 1) -> list[tuple[torch.Tensor, dict]]:
    """Per calibration batch, the hidden states entering decoder block 0 and the keyword arguments
    the model passes to block 0 (attention mask, position ids, ``position_embeddings``, ...).

    Other blocks may get other keyword arguments (Gemma-2/3 alternate sliding-window and full
    attention, with other masks and, Gemma-3, another RoPE): to run every block, use
    :func:`capture_per_block_inputs`."""
    first = decoder_blocks(model)[0]
    captured: list[tuple[torch.Tensor, dict]] = []

    def catch(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = _block_hidden(args, kwargs)
        captured.append((hidden, kwargs))
        raise _Stop

    _forward_batches(model, calib_ids, batch_size, first.register_forward_pre_hook(catch, with_kwargs=True))
    return captured


def same_value(a, b) -> bool:
    """Whether two block arguments are interchangeable: the same object, or equal tensors (same shape,
    dtype, device and values), or containers of such; other objects by ``==``. False when unsure."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(same_value(a[k], b[k]) for k in a))
    try:
        return bool(a == b)
    except Exception:  # an object without a boolean ==: treat as different (the safe side)
        return False


def _forward_recording_kwargs(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """One forward of ``batch`` up to the last decoder block: block 0's input hidden states and every
    block's keyword arguments (references to the model's tensors: masks, RoPE tables are shared)."""
    blocks = decoder_blocks(model)
    hidden: list[torch.Tensor] = []
    kwargs_of: list[dict | None] = [None] * len(blocks)

    def recorder(index: int):
        def record(module, args, kwargs):
            kwargs = dict(kwargs)
            h = _block_hidden(args, kwargs)
            kwargs_of[index] = kwargs
            if index == 0:
                hidden.append(h.clone())  # later blocks cannot change it, even in place
            if index == len(blocks) - 1:
                raise _Stop  # every block's arguments are known: the last block need not run
        return record

    handles = [block.register_forward_pre_hook(recorder(i), with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        try:
            model(batch.to(model_device(model)), use_cache=False)
        except _Stop:
            pass
    finally:
        for h in handles:
            h.remove()
    if not hidden or any(k is None for k in kwargs_of):
        missing = [i for i, k in enumerate(kwargs_of) if k is None]
        raise RuntimeError(f"the forward pass did not call decoder blocks {missing}")
    return hidden[0], kwargs_of


@torch.inference_mode()
def capture_per_block_inputs(model: nn.Module, calib_ids: torch.Tensor,
                             batch_size: int = 1) -> list[tuple[torch.Tensor, list[dict]]]:
    """Per calibration batch, the hidden states entering decoder block 0 and, per decoder block, the
    keyword arguments the model passes to it: run block ``l`` as ``run_block(block, h, kwargs[l])``.

    The first batch runs through all blocks with every block's arguments recorded. If every block gets
    block 0's (same objects or equal tensors: LLaMA, Qwen, Mistral, ...), the other batches stop at block
    0 as in :func:`capture_block_inputs` and each batch's list holds its block-0 dict ``L`` times (the same
    object). Otherwise (Gemma-2/3: sliding-window and full-attention layers, with other masks and RoPE)
    every batch runs through all blocks once, to record each block's own arguments (references: the
    model builds each mask / RoPE table once per forward and shares it between the blocks)."""
    batches = list(_batches(calib_ids, batch_size))
    if not batches:
        return []
    hidden, kwargs_of = _forward_recording_kwargs(model, batches[0])
    shared = all(k.keys() == kwargs_of[0].keys() and all(same_value(k[n], kwargs_of[0][n]) for n in k)
                 for k in kwargs_of[1:])
    n_blocks = len(kwargs_of)
    if shared:
        first = [(hidden, kwargs_of[0])]
        rest = capture_block_inputs(model, calib_ids[len(batches[0]):], batch_size) if len(batches) > 1 else []
        return [(h, [k] * n_blocks) for h, k in first + rest]
    captured = [(hidden, kwargs_of)]
    for batch in batches[1:]:
        captured.append(_forward_recording_kwargs(model, batch))
    return captured


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """One decoder block forward (transformers 5 blocks return a tensor, older ones a tuple)."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out
