"""The plant views a station config asks for (``plant.sparkplug``, ``plant.opcua``), built for
the CLI to hand to the station (``Station(cfg, views=...)``)."""

from __future__ import annotations

from ..contract.mqtt import MqttSection
from .config import PlantSection


def build_views(plant: PlantSection, station_id: str, mqtt: MqttSection) -> list:
    """One ``LineView`` per configured plant protocol (none by default)."""
    views: list = []
    if plant.sparkplug is not None:
        from .sparkplug.node import SparkplugView

        views.append(SparkplugView(plant.sparkplug, station_id, mqtt))
    if plant.opcua is not None:
        from .opcua.server import OpcUaView

        views.append(OpcUaView(plant.opcua, station_id))
    return views
