"""Paths a command is given, checked before any work: one that cannot be used (a NUL byte, a name too long,
under a file) is refused in one line, and an output folder or file is checked writable before anything is
computed for it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dsa.errors import UserError


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path("/")


def _can_create_in(folder: Path) -> bool:
    """True when a file can really be created in ``folder`` (``os.access`` says yes to root in /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def usable_path(path: str | Path, what: str) -> Path:
    """``path`` (``~`` expanded) when the system takes it as a name at all; UserError for one it refuses
    outright (longer than a file name may be) instead of an OSError wherever it is first looked at."""
    path = Path(path).expanduser()
    try:
        path.exists()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        name = str(path) if len(str(path)) <= 60 else str(path)[:60] + "…"
        raise UserError(f"{what} {name}: {reason}") from None
    return path


def check_output_dir(path: str | Path, flag: str) -> Path:
    """A folder this command will create or fill: it is a folder (or does not exist yet) and can be written."""
    path = usable_path(path, flag)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder")
    base = _existing_ancestor(path.absolute())
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is not a folder")
    if not _can_create_in(base):
        raise UserError(f"{flag} {path} cannot be written ({base} is not writable)")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """A file this command will write: its folder exists and can be written, and it is not a folder."""
    path = usable_path(path, flag)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} cannot be written")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: folder {parent} does not exist")
    if not _can_create_in(parent):
        raise UserError(f"{flag} {path} cannot be written ({parent} is not writable)")
    return path
