"""Is the Hugging Face Hub reachable? (decides hub vs. local files for models and data)."""
from __future__ import annotations

import functools
import os
import socket

HUB_HOST = ("huggingface.co", 443)


def offline_forced() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() not in ("", "0", "false", "no") for f in flags)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """A socket connect to huggingface.co:443 (cached for the process); False when offline mode is set."""
    if offline_forced():
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False
