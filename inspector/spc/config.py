"""The SPC service's configuration: one YAML file (``inspector spc --config spc.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..contract.mqtt import MqttSection
from ..contract.schema import load_yaml, setting
from ..logs import LoggingSection
from . import charts


@dataclass(frozen=True, kw_only=True)
class SubscribeSection:
    verdicts: list[str] = setting(
        factory=lambda: ["inspector/+/verdict"], help="verdict topics (wildcards allowed)"
    )
    gate_events: list[str] = setting(
        factory=lambda: ["inspector/+/gate"], help="gate event topics (wildcards allowed)"
    )
    context: list[str] = setting(
        factory=list,
        help="topics stored alongside as context (temperature, lot id, tool change): an alarm "
        "lists the changes on them just before it",
    )
    session_expiry_s: int = setting(
        3600, "the broker keeps our subscription and queues messages this long while we are away"
    )
    max_unacked: int = setting(
        2000,
        "QoS 1 messages the broker may hand us before we acknowledge them (MQTT 5 Receive "
        "Maximum): what the service holds in memory while the store cannot be written; the "
        "broker queues the rest (its max_queued_messages)",
    )

    def problems(self):
        if not self.verdicts:
            yield "verdicts", "name at least one verdict topic"
        if self.session_expiry_s < 0:
            yield "session_expiry_s", "must be 0 or more"
        if not 1 <= self.max_unacked <= 65535:
            yield "max_unacked", "must be between 1 and 65535"


@dataclass(frozen=True, kw_only=True)
class StoreSection:
    url: str = setting(
        "spc.sqlite",
        "a SQLite file (relative to the config file) or postgresql://user@host/db",
    )
    retention_days: float = setting(400.0, "verdicts, events and context older than this go")
    batch: int = setting(500, "messages written per transaction at most")
    retry_max_s: float = setting(
        5.0, "a failed write is retried after 0.1 s, then twice as long each time, up to this"
    )
    busy_timeout_s: float = setting(
        5.0, "SQLite: how long a write waits for another process's lock before it fails"
    )

    def problems(self):
        if self.retention_days <= 0:
            yield "retention_days", "must be positive"
        if not 1 <= self.batch <= 100_000:
            yield "batch", "must be between 1 and 100000"
        if not 0.1 <= self.retry_max_s <= 600:
            yield "retry_max_s", "must be between 0.1 and 600"
        if self.busy_timeout_s < 0:
            yield "busy_timeout_s", "must be 0 or more"


@dataclass(frozen=True, kw_only=True)
class ChartsSection:
    subgroup_parts: int = setting(200, "parts per subgroup (a subgroup closes when it has them)")
    subgroup_window_s: float | None = setting(
        None, "or: close a subgroup every this many seconds (time-window subgroups)"
    )
    baseline_subgroups: int = setting(
        25, "limits come from this many first subgroups (e-Handbook 6.3.3.2 suggests 20-25)"
    )
    baseline_rate: float | None = setting(
        None, "or: the known in-control reject rate (0-1), for every station"
    )
    rules: list[str] = setting(
        factory=lambda: list(charts.DEFAULT_RULES),
        help=f"run rules: {', '.join(charts.RULES)}",
    )
    side: Literal["upper", "both"] = setting(
        "upper", "upper: only a rate going up alarms; both: down too"
    )
    ewma_lambda: float = setting(charts.EWMA_LAMBDA, "EWMA weight (e-Handbook 6.3.2.4)")
    ewma_L: float = setting(charts.EWMA_L, "EWMA limit in sigmas (e-Handbook 6.3.2.4)")  # noqa: N815
    cusum_k: float = setting(charts.CUSUM_K, "CUSUM reference value, sigmas (6.3.2.3)")
    cusum_h: float = setting(charts.CUSUM_H, "CUSUM decision interval, sigmas (6.3.2.3)")
    clear_after: int = setting(5, "a run-rule alarm clears after this many quiet subgroups")
    per_class: bool = setting(True, "a p-chart per defect class as well as the reject rate")
    history: int = setting(500, "subgroups kept in memory per station")
    reorder_parts: int = setting(
        200,
        "subgroups follow the verdicts' own order (t_verdict, then seq), not their arrival: "
        "a station's newest verdicts wait, this many at most, for older ones that arrive late "
        "(0: arrival order)",
    )
    reorder_s: float = setting(
        2.0, "and for this many seconds at most (a quiet line's last verdicts are not kept back)"
    )

    def problems(self):
        for r in self.rules:
            if r not in charts.RULES:
                yield "rules", f"unknown rule {r!r} (known: {', '.join(charts.RULES)})"
        if self.subgroup_parts < 10:
            yield "subgroup_parts", "must be at least 10"
        if self.subgroup_window_s is not None and self.subgroup_window_s <= 0:
            yield "subgroup_window_s", "must be positive"
        if self.baseline_subgroups < 2:
            yield "baseline_subgroups", "must be at least 2"
        if self.baseline_rate is not None and not 0 < self.baseline_rate < 1:
            yield "baseline_rate", "must be between 0 and 1 (exclusive)"
        if not 0 < self.ewma_lambda <= 1:
            yield "ewma_lambda", "must be more than 0 and at most 1"
        for key in ("ewma_L", "cusum_h"):
            if getattr(self, key) <= 0:
                yield key, "must be positive"
        if self.cusum_k < 0:
            yield "cusum_k", "must be 0 or more"
        if self.clear_after < 1:
            yield "clear_after", "must be at least 1"
        if self.history < max(self.baseline_subgroups, 20):
            yield "history", "must be at least baseline_subgroups and 20"
        if self.reorder_parts < 0:
            yield "reorder_parts", "must be 0 or more"
        if self.reorder_s < 0:
            yield "reorder_s", "must be 0 or more"


@dataclass(frozen=True, kw_only=True)
class AlarmSection:
    context_window_s: float = setting(
        3600.0, "an alarm lists the context changes this long before it began"
    )

    def problems(self):
        if self.context_window_s < 0:
            yield "context_window_s", "must be 0 or more"


@dataclass(frozen=True, kw_only=True)
class BackfillSection:
    station: str = setting(help="the station whose recordings these are")
    path: Path = setting(help="the station's recorder.path (sidecars *.json under it)")


@dataclass(frozen=True, kw_only=True)
class SpcHttpSection:
    enabled: bool = setting(True, "serve /health and /metrics")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(9110, "port (0: any free port); the station uses 9108, the gate 9109")


@dataclass(frozen=True, kw_only=True)
class SpcConfig:
    mqtt: MqttSection = setting(
        factory=MqttSection,
        help="the broker; prefix (default 'inspector'): alarms on PREFIX/spc/alarm",
    )
    subscribe: SubscribeSection = setting(factory=SubscribeSection, help="")
    store: StoreSection = setting(factory=StoreSection, help="")
    charts: ChartsSection = setting(factory=ChartsSection, help="")
    alarms: AlarmSection = setting(factory=AlarmSection, help="")
    backfill: list[BackfillSection] = setting(
        factory=list, help="recordings read at start-up (verdicts stored while we were away)"
    )
    http: SpcHttpSection = setting(factory=SpcHttpSection, help="health and metrics")
    logging: LoggingSection = setting(factory=LoggingSection, help="")

    @property
    def alarm_topic(self) -> str:
        return f"{self.mqtt.prefix or 'inspector'}/spc/alarm"

    def chart_topic(self, station: str) -> str:
        """Where the station's reject chart is retained (the workbench's dashboard draws it)."""
        return f"{self.mqtt.prefix or 'inspector'}/spc/chart/{station}"


def load_spc_config(path) -> SpcConfig:
    """Read and validate; a relative SQLite path is taken relative to the config file."""
    cfg = load_yaml(SpcConfig, path)
    url = cfg.store.url
    if "://" not in url and url != ":memory:" and not Path(url).is_absolute():
        import dataclasses

        store = dataclasses.replace(cfg.store, url=str(Path(path).resolve().parent / url))
        cfg = dataclasses.replace(cfg, store=store)
    return cfg
