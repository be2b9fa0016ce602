"""Polling in tests: wait for something a thread or another process does."""

from __future__ import annotations

import time


def wait(cond, timeout: float = 15.0, every: float = 0.05) -> bool:
    """True as soon as ``cond()`` holds; at ``timeout`` seconds, its value then."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())
