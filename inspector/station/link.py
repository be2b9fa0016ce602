"""The station's link to the line (DESIGN 12): one typed interface, MQTT its implementation.

A link receives part triggers and model requests and publishes verdicts, the retained
status, shadow decisions and replies; ``connected`` says whether it can deliver now. The
station talks to a ``LineLink`` only; library types (paho's messages and properties) stay
inside the implementation (``publisher.MqttLink``).

Plant protocols (Sparkplug B, OPC UA) are ``LineView``s beside the link: they see every
verdict and status change and may send model requests through the same ``Handlers``, but
the reject gate's verdicts always go out on the link itself. A view that controls
inspection (OPC UA's Halt and Stop) stops and resumes it through ``Handlers.hold``.

    link = MqttLink(cfg.mqtt, station_id, topics, metrics, handlers)
    link.start(); link.publish(verdict); link.stop()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..contract.records import Verdict

Reply = Callable[[dict], None]


@dataclass(frozen=True)
class Handlers:
    """What the station does with what arrives: ``status()`` the retained status payload;
    ``trigger(payload)`` a part trigger (None: the station takes no triggers);
    ``command(payload, reply)`` a model request, answered through ``reply(outcome)``;
    ``hold(why)`` a plant view stops inspection (``why``: a sentence for the status and the
    verdicts; every part from then on fails with reason ``halted``) or, with None, resumes it.
    Once ``hold(why)`` returns, every part whose frame the station takes after it fails."""

    status: Callable[[], dict]
    trigger: Callable[[bytes], None] | None = None
    command: Callable[[bytes, Reply], None] | None = None
    hold: Callable[[str | None], None] | None = None


@runtime_checkable
class LineLink(Protocol):
    """Where verdicts go and triggers and model requests come from."""

    connected: threading.Event

    def start(self) -> None: ...

    def stop(self, timeout: float = 3.0) -> None: ...

    def publish(self, verdict: Verdict) -> None:
        """Deliver one part's verdict (thread-safe, never blocks the caller)."""

    def status_changed(self) -> None:
        """The status payload changed: publish it again soon."""

    def send_shadow(self, payload: bytes) -> None:
        """One shadow comparison (JSON), best effort."""

    def pending(self) -> int:
        """Verdicts not yet acknowledged by the line."""


@runtime_checkable
class LineView(Protocol):
    """A plant's view of the station beside the link (Sparkplug B, OPC UA)."""

    def start(self, handlers: Handlers) -> None: ...

    def stop(self) -> None: ...

    def verdict(self, verdict: Verdict) -> None:
        """A part's verdict, after the link took it (must not block)."""

    def status(self, payload: dict) -> None:
        """The station's status changed (must not block)."""
