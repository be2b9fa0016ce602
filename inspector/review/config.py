"""The review app's configuration: one YAML file (``inspector review --config review.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..contract.mqtt import MqttSection
from ..contract.schema import load_yaml, setting
from ..logs import LoggingSection


@dataclass(frozen=True, kw_only=True)
class ServerSection:
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8470, "port")
    secure_cookies: bool = setting(
        False, "mark the session cookie Secure (set when a TLS proxy sits in front)"
    )
    session_hours: float = setting(12.0, "a login lasts this long")
    login_free_attempts: int = setting(
        3, "failed logins (per user name and per address) before each next try must wait"
    )
    login_delay_max_s: float = setting(
        300.0, "the wait after failed logins doubles from 1 s up to this (then stays)"
    )

    def problems(self):
        if not 1 <= self.login_free_attempts <= 100:
            yield "login_free_attempts", "must be between 1 and 100"
        if not 1 <= self.login_delay_max_s <= 86400:
            yield "login_delay_max_s", "must be between 1 and 86400 seconds"


@dataclass(frozen=True, kw_only=True)
class RecordingsSection:
    station: str = setting(help="station name shown in the inbox")
    path: Path = setting(help="the station's recorder.path (local or mounted)")


@dataclass(frozen=True, kw_only=True)
class DatasetSection:
    path: Path = setting(help="dataset folder ROOT/<class>/*, the layout `inspector train` reads")
    good: str = setting("good", "the good class: key g")
    defects: list[str] = setting(factory=lambda: ["defect"], help="defect classes: keys 1..9")

    def problems(self):
        if not 1 <= len(self.defects) <= 9:
            yield "defects", "give 1 to 9 defect classes (keys 1..9)"
        names = [self.good, *self.defects]
        if len(set(names)) != len(names):
            yield "defects", "class names must differ from each other and from good"
        for name in names:
            if not name or name.startswith(".") or "/" in name or "\\" in name:
                yield "defects", f"{name!r} is not a folder name"


@dataclass(frozen=True, kw_only=True)
class TrainingSection:
    runs: Path = setting(Path("runs"), "run folders of `inspector train` started from the page")
    config: Path | None = setting(None, "training config YAML passed to `inspector train`")
    epochs: int = setting(20, "default epochs on the form")
    args: list[str] = setting(
        factory=list, help="extra `inspector train` arguments, e.g. [--image-size, '64']"
    )


@dataclass(frozen=True, kw_only=True)
class StationModelSection:
    name: str = setting(help="station name")
    config: Path = setting(help="the station's config (what `inspector verify` runs; only read)")
    golden: Path = setting(help="the station's golden set (pass/ and fail/)")
    models: Path = setting(
        help="the station's models folder, with the `current` link (the workbench writes here)"
    )
    mqtt: MqttSection | None = setting(
        None,
        "the station's broker as the user allowed on PREFIX/cmd/model (username: admin, "
        "password_file or password_env; prefix: the station's, default inspector/NAME); "
        "without it a promotion can only verify and move the link",
    )
    spc_alarms: str = setting(
        "inspector/spc/alarm",
        "the SPC service's retained alarm topic on this broker (the dashboard shows the "
        "station's active alarms); '' for none",
    )
    answer_timeout_s: float = setting(
        900.0, "how long a promotion waits for the running station's answer (load, checks, golden)"
    )
    verify_timeout_s: float = setting(
        900.0, "how long `inspector verify` may take when the station is down"
    )

    @property
    def prefix(self) -> str:
        return (self.mqtt.prefix if self.mqtt else None) or f"inspector/{self.name}"

    @property
    def spc_chart(self) -> str | None:
        """The SPC service's retained reject chart of this station, beside its alarm topic
        (``inspector/spc/alarm`` -> ``inspector/spc/chart/NAME``); None without alarms."""
        if not self.spc_alarms:
            return None
        return f"{self.spc_alarms.rsplit('/', 1)[0]}/chart/{self.name}"

    def problems(self):
        for key in ("answer_timeout_s", "verify_timeout_s"):
            if not 1 <= getattr(self, key) <= 7200:
                yield key, "must be between 1 and 7200 seconds"
        if self.mqtt is not None and self.mqtt.protocol != "5":
            yield "mqtt.protocol", "model requests need MQTT 5 (request/response)"


@dataclass(frozen=True, kw_only=True)
class ModelsSection:
    registry: list[Path] = setting(
        factory=list, help="folders searched for exported models (model.onnx + model.json)"
    )
    stations: list[StationModelSection] = setting(factory=list, help="promotion targets")

    def problems(self):
        names = [s.name for s in self.stations]
        if len(set(names)) != len(names):
            yield "stations", "two stations with the same name"


@dataclass(frozen=True, kw_only=True)
class ReviewConfig:
    server: ServerSection = setting(factory=ServerSection, help="")
    database: str = setting(
        "review.sqlite",
        "labels, users, runs: a SQLite file, or a PostgreSQL URL postgresql://USER@HOST/DB "
        "(one server for many stations)",
    )
    cache: Path = setting(Path("review-cache"), "thumbnail cache")
    thumbnail_px: int = setting(160, "thumbnail size (longest side)")
    page_size: int = setting(50, "parts per inbox page")
    rescan_s: float = setting(30.0, "look for new recordings this often (0: only at start)")
    recordings: list[RecordingsSection] = setting(factory=list, help="recordings folders")
    dataset: DatasetSection = setting(help="where relabelled images go")
    training: TrainingSection = setting(factory=TrainingSection, help="")
    reports: list[Path] = setting(
        factory=list, help="folders holding evaluation reports (folders with metrics.json)"
    )
    models: ModelsSection = setting(factory=ModelsSection, help="")
    logging: LoggingSection = setting(factory=LoggingSection, help="")

    def problems(self):
        if not 10 <= self.page_size <= 500:
            yield "page_size", "must be between 10 and 500"
        stations = [r.station for r in self.recordings]
        if len(set(stations)) != len(stations):
            yield "recordings", "two recordings folders with the same station name"


def load_review_config(path) -> ReviewConfig:
    """Read and validate; a relative SQLite path is taken relative to the config file."""
    cfg = load_yaml(ReviewConfig, path)
    db = cfg.database
    if "://" not in db and db != ":memory:" and not Path(db).expanduser().is_absolute():
        db = str((Path(path).resolve().parent / Path(db).expanduser()).resolve())
    elif "://" not in db:
        db = str(Path(db).expanduser())
    return dataclasses.replace(cfg, database=db)
