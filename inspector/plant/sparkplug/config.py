"""``plant.sparkplug``: the edge node's identity and behaviour."""

from __future__ import annotations

from dataclasses import dataclass

from ...contract.schema import setting


@dataclass(frozen=True, kw_only=True)
class SparkplugSection:
    group_id: str = setting(help="Sparkplug group id (spBv1.0/GROUP/...)")
    edge_node_id: str | None = setting(None, "edge node id (default: the station id)")
    device_id: str = setting("vision", "the device under the node that carries the station")
