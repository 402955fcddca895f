"""Save a pruned model as a standard HF folder, atomically: written to a temporary sibling folder and
renamed at the end. A writer killed mid-save leaves a temporary folder named after its process, which
the next save into the same parent removes once that process is gone."""
from __future__ import annotations

import copy
import functools
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from evaluators.errors import UserError


def _plain_model(model):
    """The model itself, or for a GGUF-loaded (quantizer-tagged) one an untagged copy sharing its tensors."""
    if getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config"):
        return model
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = type(model)(config).to(model.device, model.dtype)
    plain.load_state_dict(model.state_dict())
    return plain


@functools.lru_cache(maxsize=1)
def _machine_tag() -> str:
    """Where PIDs are meaningful: the host name (letters, digits, dashes), plus on Linux the PID namespace
    (containers sharing a host name and a disk see different PIDs)."""
    tag = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    try:
        ns = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))  # "pid:[4026531836]"
    except OSError:
        ns = ""
    return f"{tag}-{ns}" if ns else tag


def _writer_tag() -> str:
    """``PID@MACHINE`` of this process."""
    return f"{os.getpid()}@{_machine_tag()}"


# ``.NAME.PID@MACHINE.TOKEN.tmp`` (being written), ``.NAME.PID@MACHINE.TOKEN.old`` (the replaced folder, briefly)
_WORK_DIR = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[0-9a-f]+\.(?P<kind>tmp|old)$")


def _work_dir(out: Path, kind: str) -> Path:
    """A new empty sibling folder of ``out`` named after this process, created like ``mkdir`` does
    (mode ``0o777 & ~umask``, unlike ``tempfile.mkdtemp``'s 0700)."""
    while True:
        path = out.parent / f".{out.name}.{_writer_tag()}.{secrets.token_hex(4)}.{kind}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _normal_file_modes(folder: Path) -> None:
    """Give the files in ``folder`` the mode ``open`` gives (``0o666 & ~umask``, read off the folder's own
    ``mkdir`` mode): safetensors writes its weights file 0600, which other users cannot read."""
    if os.name != "posix":
        return
    mode = folder.stat().st_mode & 0o666
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


def _pid_alive(pid: int) -> bool:
    """Is process ``pid`` running (here)? True when unsure (never clean up a live writer's folder)."""
    if pid <= 0:
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def remove_stale_work_dirs(parent: str | Path) -> list[Path]:
    """Remove the leftovers of killed ``save_pruned`` calls in ``parent``: folders ``.NAME.PID@MACHINE.*.tmp``
    and ``.old`` of this machine (host and PID namespace) whose process is no longer running. A leftover
    ``.old`` holds the folder that was being replaced; it is moved back to ``NAME`` when the kill came
    before the new one took its place. Folders of live processes, of other machines and without a PID
    (older versions) are left alone. Returns the folders removed."""
    parent = Path(parent)
    host = _machine_tag()
    done = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return done
    for path in entries:
        match = _WORK_DIR.match(path.name)
        if (match is None or match["host"] != host or path.is_symlink() or not path.is_dir()
                or _pid_alive(int(match["pid"]))):
            continue
        target, kept = parent / match["name"], path / match["name"]
        if match["kind"] == "old" and kept.is_dir() and not target.exists():
            try:
                kept.rename(target)
            except OSError:
                continue  # keep the leftover rather than lose the only copy
        shutil.rmtree(path, ignore_errors=True)
        done.append(path)
    return done


def save_pruned(model, tokenizer, out_dir: str | Path, compressor=None) -> Path:
    """Save a standard HF folder (config + safetensors + tokenizer, and the processor of an image-text
    model loaded by :func:`load_model`) loadable by ``from_pretrained``. With ``compressor`` (a
    compressed-tensors ``ModelCompressor``, :func:`evaluators.models.compressed.sparsity_compressor`) the
    weights are written in its compressed form and its config is added to ``config.json``; the model in
    memory is not changed.

    Written to a hidden sibling folder ``.NAME.PID@MACHINE.*.tmp`` and renamed at the end, so a failure
    leaves nothing half-written; an existing ``out_dir`` folder is replaced. The folder and its files get
    the modes ``mkdir`` and ``open`` give (``0o777 & ~umask``, ``0o666 & ~umask``). Leftovers of a killed
    earlier call in the same parent folder (process no longer running) are removed first
    (:func:`remove_stale_work_dirs`).
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a folder: {out_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(out.parent)
    tmp = _work_dir(out, "tmp")
    try:
        plain = _plain_model(model)
        if compressor is None:
            plain.save_pretrained(tmp, safe_serialization=True)
        else:
            plain.save_pretrained(tmp, safe_serialization=True, state_dict=compressor.compress(plain))
            compressor.update_config(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        processor = getattr(model, "dsa_processor", None)  # an image-text model's, from load_model
        if processor is not None:
            processor.save_pretrained(tmp)
        _normal_file_modes(tmp)
        if out.exists():
            old = _work_dir(out, "old")
            out.rename(old / out.name)
            try:
                tmp.rename(out)
            except BaseException:
                (old / out.name).rename(out)  # put the previous folder back
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
