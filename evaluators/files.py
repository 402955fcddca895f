"""Files: written atomically (:func:`write_atomic`, :func:`write_json`: a process killed at any moment leaves
the previous file whole), and read back without trusting them: the one home for "is this a regular file, and
how much of it may be read".

Run folders, comparison folders, the level database and local data files are shared between users and
anything may have replaced one of their files: a FIFO blocks the reader until a writer comes, a link to
``/dev/zero`` never ends, a folder is not a file. So a file is opened non-blocking, checked on the opened
descriptor (a file swapped in between cannot slip through), and read in chunks up to a bound; and what a
path is, when it is not a regular file, is said in words (:func:`path_kind`) instead of "missing".
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

MAX_FILE_BYTES = 64 * 2**20  # a record (checkpoint, hall of fame, compare.json …) larger than this is not read

# what a path is when it is not a regular file, in words for an error message
KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return "a file" if stat.S_ISREG(mode) else next((words for test, words in KINDS if test(mode)), "a special file")


def path_kind(path: Path | str) -> str:
    """What ``path`` is, in words for an error message, without opening it: "a file" (a regular file or a
    link to one), "missing" (also below something that is not a folder), "a link to nothing", "a folder",
    "a FIFO", "a character device" (a link to ``/dev/zero``) …; so that what is there is never reported
    as missing."""
    try:
        return _kind(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return "a link to nothing" if os.path.lexists(path) else "missing"
    except (OSError, ValueError) as exc:  # no permission, a name too long, a NUL byte
        return f"unreadable ({exc.strerror if isinstance(exc, OSError) else exc})"


def open_regular(path: Path | str, limit: int) -> tuple[int, int]:
    """(file descriptor, size) of ``path`` when it is a regular file, or a link to one, of at most ``limit``
    bytes; OSError otherwise, before anything is read (opened non-blocking, checked on the opened file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file", str(path))
    if info.st_size > limit:
        os.close(fd)
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return fd, info.st_size


def chunks(path: Path | str, limit: int, step: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of the regular file ``path`` (:func:`open_regular`), ``step`` at a time; OSError once more
    than ``limit`` have come (a file that grew while read)."""
    fd, _ = open_regular(path, limit)
    size = 0
    try:
        while chunk := os.read(fd, step):
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
            yield chunk
    finally:
        os.close(fd)


def read_regular(path: Path | str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; OSError for anything else, without
    reading it."""
    return b"".join(chunks(path, limit))


def read_json(path: Path | str, limit: int = MAX_FILE_BYTES) -> Any:
    """JSON data of a regular file (:func:`read_regular`): OSError when it cannot be read, ValueError
    when it is not JSON (text nested too deeply for the parser included)."""
    data = read_regular(path, limit)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def file_digest(path: Path | str, limit: int) -> tuple[int, str]:
    """(size, sha256 hex digest) of the regular file ``path`` of at most ``limit`` bytes (OSError else)."""
    h, size = hashlib.sha256(), 0
    for chunk in chunks(path, limit, 8 << 20):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def write_atomic(path: Path | str, data: bytes | Callable[[Path], None]) -> None:
    """Write ``data`` (bytes, or a function that writes the file it is given) to a temporary file in the same
    folder, fsync it, then rename it over ``path``: readers see the old file or the new one, never a part.
    The temporary name carries the process id, so that two processes writing the same file do not collide."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path | str, data: Any) -> None:
    """A record as JSON (indented by one space; NumPy and torch scalars as floats), atomically."""
    write_atomic(path, json.dumps(data, indent=1, default=float).encode())
