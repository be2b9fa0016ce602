"""The gate's configuration: one YAML file (``inspector gate GATE.yaml``, ``inspector check``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..contract.mqtt import MqttSection
from ..contract.schema import Tagged, load_yaml, setting
from ..contract.triggers import MAX_PART_ID_CHARS, MAX_PAYLOAD_BYTES, SAME_PART_WINDOW_S
from ..logs import LoggingSection
from ..plant.sparkplug.config import SparkplugSection
from .actuators import ACTUATOR_TYPES, LogActuatorConfig


@dataclass(frozen=True, kw_only=True)
class GateSection:
    id: str = setting("gate-1", "gate id, in gate events and the MQTT client id")
    station_prefix: str = setting("inspector/station-1", "the inspector's topic prefix")
    travel_ms: float = setting(1000.0, "trigger to the part reaching the gate: its deadline")
    encoder_topic: str | None = setting(None, 'encoder counts (JSON number or {"count": n})')
    travel_counts: int | None = setting(None, "encoder ticks from trigger to the gate")
    status_stale_s: float = setting(3.0, "no status for this long: the station is gone")
    keep_decided: int = setting(100_000, "decided parts remembered for duplicate/late detection")
    same_part_window_s: float = setting(
        SAME_PART_WINDOW_S,
        "a repeated part_id whose trigger ts is within this of the first one's is the same part "
        "(a redelivery); later it is a new part (PLC counters wrap or restart). Longer than a "
        "trigger's redelivery takes, shorter than the counter takes to come round",
    )
    max_part_id_chars: int = setting(
        MAX_PART_ID_CHARS,
        "the station's trigger.max_part_id_chars: a part with a longer id is rejected "
        "at once (invalid_trigger), as the station sends it no verdict",
    )
    max_payload_bytes: int = setting(
        MAX_PAYLOAD_BYTES,
        "the station's trigger.max_payload_bytes: a part whose trigger is larger is "
        "rejected at once (invalid_trigger)",
    )

    def problems(self):
        if bool(self.encoder_topic) != (self.travel_counts is not None):
            yield "travel_counts", "give encoder_topic and travel_counts together"
        if self.travel_ms <= 0:
            yield "travel_ms", "must be positive"
        if self.same_part_window_s <= 0:
            yield "same_part_window_s", "must be positive"


def _actuator_types() -> dict[str, type]:
    return ACTUATOR_TYPES


@dataclass(frozen=True, kw_only=True)
class GateHttpSection:
    enabled: bool = setting(True, "serve /health and /metrics")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(9109, "port (0: any free port); the station uses 9108")


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    gate: GateSection = setting(factory=GateSection, help="")
    mqtt: MqttSection = setting(factory=MqttSection, help="")
    actuator: Tagged("actuator", _actuator_types) = setting(  # type: ignore[valid-type]
        factory=LogActuatorConfig, help="what a reject does"
    )
    logging: LoggingSection = setting(factory=LoggingSection, help="")
    http: GateHttpSection = setting(factory=GateHttpSection, help="health and metrics")
    sparkplug: SparkplugSection | None = setting(
        None,
        "the gate as a Sparkplug B edge node of its own (passed, rejected by reason, missed, "
        "health; docs/sparkplug.md); edge_node_id defaults to the gate id",
    )


def load_gate_config(path) -> GateConfig:
    return load_yaml(GateConfig, path)
