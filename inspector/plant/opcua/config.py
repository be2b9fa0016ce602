"""``plant.opcua``: the server's endpoint, security and users."""

from __future__ import annotations

from dataclasses import dataclass

from ...contract.schema import setting


@dataclass(frozen=True, kw_only=True)
class OpcUaSection:
    endpoint: str = setting("opc.tcp://0.0.0.0:4840/inspector/", "the server's endpoint URL")
