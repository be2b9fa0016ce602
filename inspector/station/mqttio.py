"""A paho client's network I/O, driven by the thread that owns the client.

paho's own loop thread costs a second thread per connection and, for every publish from
another thread, a byte through a socket pair to wake it. Instead the owner calls paho's
``loop_read``, ``loop_write`` and ``loop_misc`` itself around a ``select`` on the client's
socket plus a wake-up socket of ours: a publish is written at once, and every paho
callback runs on the owner's thread. Other threads only call ``wake()``.

    io = ClientIO()
    client.connect(host, port)                       # paho sends CONNECT at once
    io.pump(client, connack.is_set, 5.0, lost)       # until CONNACK, a drop, or 5 s
    while running:
        io.step(client, wait=0.2)                    # PUBACKs, triggers, keepalive
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt

MISC_EVERY_S = 0.5  # keepalive bookkeeping (PINGREQ, a broker that stopped answering)
_TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux


class ClientIO:
    """Select-driven I/O for one paho client at a time, on its owner's thread."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._last_misc = 0.0

    def wake(self) -> None:
        """End the owner's current or next wait in ``step`` (any thread)."""
        with contextlib.suppress(OSError):  # full of wake-ups already, or closed
            self._wake_w.send(b"x")

    def step(self, client: mqtt.Client, wait: float) -> None:
        """Wait up to ``wait`` s for the broker or a ``wake()``, then read what arrived (paho
        calls its callbacks here), write what paho still holds, and keep the connection alive.
        A dropped connection reaches paho's ``on_disconnect`` from in here."""
        sock = client.socket()
        if sock is None:
            return
        buffered = _tls_pending(sock)
        try:
            readable, writable, _ = select.select(
                [sock, self._wake_r],
                [sock] if client.want_write() else [],
                [],
                0.0 if buffered else wait,
            )
        except (OSError, ValueError, TypeError):  # closed under us: let paho tell why
            readable, writable = [sock], []
        if self._wake_r in readable:
            with contextlib.suppress(OSError):  # BlockingIOError once empty
                while self._wake_r.recv(4096):
                    pass
        if sock in readable or buffered:
            client.loop_read()
        if client.socket() is not None and (sock in writable or client.want_write()):
            client.loop_write()
        now = time.monotonic()
        if now - self._last_misc >= MISC_EVERY_S and client.socket() is not None:
            self._last_misc = now
            client.loop_misc()

    def pump(
        self,
        client: mqtt.Client,
        done: Callable[[], bool],
        timeout: float,
        lost: threading.Event,
    ) -> bool:
        """Drive ``client`` until ``done()``, ``lost`` is set (by the caller's on_disconnect)
        or ``timeout`` s pass: waiting for CONNACK, SUBACK, a last PUBACK. True when done."""
        end = time.monotonic() + timeout
        while not done() and not lost.is_set():
            left = end - time.monotonic()
            if client.socket() is None or left <= 0:
                break
            self.step(client, min(left, 0.1))
        return done()

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()


@contextlib.contextmanager
def corked(client: mqtt.Client, on: bool = True) -> Iterator[None]:
    """Hold back the small writes made inside (``on``), then flush them: several messages
    published in one go leave in shared TCP segments, not one network round of work each
    (Linux ``TCP_CORK``; elsewhere, or on a socket without it, nothing changes)."""
    sock = client.socket()
    done = on and _cork(sock, True)
    try:
        yield
    finally:
        if done:
            _cork(client.socket(), False)


def close_socket(client: mqtt.Client | None) -> None:
    """Close a client's connection without a DISCONNECT (which would cancel the last will)."""
    sock = client.socket() if client is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _cork(sock, on: bool) -> bool:
    if _TCP_CORK is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _tls_pending(sock) -> bool:
    """Bytes TLS already decrypted but nobody read: select() would not report them."""
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0
