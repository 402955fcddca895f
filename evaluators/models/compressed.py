"""The compressed-tensors format for a dense-or-2:4 model (``dsa prune --nm 2:4 --format
compressed-tensors``): the 2:4 linears' weights stored as compressed-tensors' 2:4 bitmask (format
``sparse-24-bitmask``: a bitmask plus the kept half of the values), the dense blocks as plain tensors,
with the ``sparsity_config`` that transformers' compressed-tensors support reads when ``from_pretrained``
decompresses them.

**Library versions.** The sparse compressors were removed from compressed-tensors in 0.15 (pull request
vllm-project/compressed-tensors#610, March 2026; llm-compressor#2452 removed its sparse saving with it), and
transformers 5 no longer decompresses a ``sparsity_config``. Writing needs ``compressed-tensors<=0.14.0.1``;
loading back needs transformers 4.56–4.57 (checked: 4.57.6 with compressed-tensors 0.14.0.1; load with
``dtype=torch.float32`` or the checkpoint's dtype, since that loader defaults to float16).

**Unstructured and mixed N:M models are refused**: their format would be ``sparse-bitmask``, whose
compressed tensors have a data-dependent length; transformers 4.56+ lays the compressed model out on the
meta device before loading, where that compressor fails ("Cannot copy out of meta tensor"), and the
transformers that read it from disk (≤ 4.55) predate the ``dtype`` API this tool loads models with. A
folder no library loads is not an export.
"""
from __future__ import annotations

from evaluators.errors import UserError

SAVE_FORMATS = ("safetensors", "compressed-tensors")  # dsa prune --format
NEEDS = ("--format compressed-tensors needs compressed-tensors<=0.14.0.1 (its sparse compressors were removed in "
         "0.15, vllm-project/compressed-tensors#610); loading the folder back needs transformers 4.56-4.57")


def check_available(nm: str | None) -> None:
    """UserError (one line) unless a ``--nm nm`` model can be written in compressed-tensors' format here."""
    if nm != "2:4":
        raise UserError("--format compressed-tensors writes dense-or-2:4 models (--nm 2:4): transformers cannot load "
                        "compressed-tensors' sparse bitmask of unstructured or mixed N:M weights "
                        "(evaluators/models/compressed.py says why)")
    try:
        from compressed_tensors.compressors import ModelCompressor  # noqa: F401
        from compressed_tensors.config import SparsityCompressionConfig
    except ImportError as exc:
        raise UserError(f"{NEEDS}: {exc}") from None
    if "sparse-24-bitmask" not in SparsityCompressionConfig.registered_names():
        raise UserError(f"{NEEDS}: the installed compressed-tensors has no sparse-24-bitmask format")


def sparsity_compressor(model, nm: str | None, sparsities: list[float], target: float):
    """compressed-tensors' ``ModelCompressor`` for the dense-or-2:4 ``model`` pruned with the per-block
    ``sparsities``: the 2:4 bitmask over the linears of its pruned blocks (the allocation says which);
    ``target`` is the mean sparsity (the config's ``global_sparsity``)."""
    check_available(nm)
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig

    from evaluators.models.loading import pruned_linears

    targets = list(pruned_linears(model, sparsities))
    if not targets:
        raise UserError("--format compressed-tensors: the model has no pruned linear to compress")
    config = SparsityCompressionConfig.load_from_registry("sparse-24-bitmask", targets=targets,
                                                          sparsity_structure="2:4", global_sparsity=float(target))
    return ModelCompressor(sparsity_config=config)
