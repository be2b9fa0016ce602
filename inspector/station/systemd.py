"""systemd integration without a dependency: ``sd_notify`` over $NOTIFY_SOCKET.

``inspector run`` sends ``READY=1`` once the station is online and ``WATCHDOG=1`` every
half watchdog interval while the pipeline makes progress; a stalled pipeline stops the
pings and systemd restarts the service (``WatchdogSec=`` in the unit).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not running under systemd (or it failed)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False


def watchdog_interval() -> float | None:
    """The service's watchdog interval in seconds, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


class Watchdog:
    """Pings systemd every half interval while ``alive(max_age_s)`` says the pipeline moves."""

    def __init__(self, alive: Callable[[float], bool], interval: float) -> None:
        self.alive = alive
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self.stalled = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval / 2):
            if self.alive(self.interval / 2):
                if self.stalled:
                    log.warning("pipeline moving again")
                self.stalled = False
                notify("WATCHDOG=1")
            elif not self.stalled:
                self.stalled = True
                log.error("pipeline stalled: not pinging the systemd watchdog")
