"""``plant:`` in a station config: the optional Sparkplug B edge node and OPC UA server."""

from __future__ import annotations

from dataclasses import dataclass

from ..contract.schema import setting
from .opcua.config import OpcUaSection
from .sparkplug.config import SparkplugSection


@dataclass(frozen=True, kw_only=True)
class PlantSection:
    sparkplug: SparkplugSection | None = setting(
        None, "a Sparkplug B edge node on the station's broker (the plant's SCADA view)"
    )
    opcua: OpcUaSection | None = setting(
        None, "an OPC UA server with the OPC 40100 Machine Vision model (the MES view)"
    )
