"""The station configuration: one YAML file per station, validated before anything starts.

Every setting has a default and a description (``inspector check --schema`` lists them).
Unknown keys and wrong types are errors naming the key path and line. Relative paths
resolve against the config file's folder. The broker password can come from the file,
an environment variable (``password_env``) or a file (``password_file``).

Why one module: the station's YAML schema is one tree of small dataclasses (one per config
section); split, the key paths in errors would be harder to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..contract.mqtt import MqttSection
from ..contract.schema import Tagged, load_yaml, setting
from ..contract.triggers import MAX_PART_ID_CHARS, MAX_PAYLOAD_BYTES, SAME_PART_WINDOW_S
from ..errors import ConfigError
from ..logs import LoggingSection
from ..plant.config import PlantSection
from .quality import QualitySection

# trigger.max_payload_bytes: the smallest useful trigger ({"part_id": ..., "ts": ...}) and
# the largest the broker's max_packet_size (deploy/mosquitto/mosquitto.conf) carries.
MIN_TRIGGER_BYTES = 64
MAX_TRIGGER_BYTES = 65536


def _sources() -> dict[str, type]:
    from .sources import source_types  # with the camera plugins (genicam, pylon)

    return source_types()


@dataclass(frozen=True, kw_only=True)
class StationSection:
    id: str = setting("station-1", "station id; used in topics, client id and verdicts")
    name: str = setting("", "human-readable name")

    def problems(self):
        if not self.id or any(c in self.id for c in "/#+ \0"):
            yield "id", "must be non-empty and contain no '/', '#', '+', spaces or NUL"


@dataclass(frozen=True, kw_only=True)
class TriggerSection:
    type: Literal["free-run", "mqtt", "camera"] = setting(
        "free-run",
        "free-run: each frame is a part; mqtt: a trigger message names the part; "
        "camera: a hardware-triggered camera, each frame is a part",
    )
    topic: str | None = setting(None, "trigger topic (default PREFIX/trigger)")
    max_pending: int = setting(64, "triggers waiting for a frame; more are failed with 'overflow'")
    max_payload_bytes: int = setting(
        MAX_PAYLOAD_BYTES, "larger trigger payloads are rejected and counted"
    )
    max_part_id_chars: int = setting(
        MAX_PART_ID_CHARS, "longer part ids are rejected and counted (the gate uses the same)"
    )
    same_part_window_s: float = setting(
        SAME_PART_WINDOW_S,
        "a repeated part id within this long of its first trigger is the same part (a "
        "redelivery); later it is a new part (a PLC counter that wrapped). Same as the gate's.",
    )
    match_by: Literal["receipt", "timestamp"] = setting(
        "receipt",
        "receipt: a part's frame is the first captured after its trigger message arrived; "
        "timestamp: the first captured after the trigger's 'ts' (needs synchronised clocks; "
        "robust to a trigger message delayed past its frame)",
    )
    max_frame_wait_ms: float | None = setting(
        None,
        "a part whose frame has not come this long after its trigger fails with 'timeout', "
        "so one missed frame can't shift every later part onto its neighbour's image",
    )
    max_age_ms: float | None = setting(
        None,
        "a trigger whose 'ts' is older than this on arrival fails at once with 'timeout': "
        "the frame after it would show another part. Needs synchronised clocks (NTP/PTP).",
    )

    def problems(self):
        if self.max_pending < 1:
            yield "max_pending", "must be at least 1"
        if not 0 < self.same_part_window_s <= 3600:
            yield "same_part_window_s", "must be more than 0 and at most 3600 seconds"
        if not MIN_TRIGGER_BYTES <= self.max_payload_bytes <= MAX_TRIGGER_BYTES:
            yield (
                "max_payload_bytes",
                f"must be between {MIN_TRIGGER_BYTES} and {MAX_TRIGGER_BYTES} (the broker's "
                "max_packet_size leaves room for a trigger this large, and no larger)",
            )
        if self.max_part_id_chars < 1:
            yield "max_part_id_chars", "must be at least 1"


@dataclass(frozen=True, kw_only=True)
class PartSection:
    deadline_ms: float = setting(1000.0, "time from trigger (or capture) to the part's deadline")
    timeout_margin_ms: float = setting(
        20.0, "a part still without a verdict this long before its deadline fails with 'timeout'"
    )

    def problems(self):
        if self.deadline_ms <= 0:
            yield "deadline_ms", "must be positive"
        if not 10 <= self.timeout_margin_ms < self.deadline_ms:
            yield (
                "timeout_margin_ms",
                "must be at least 10 (the watchdog's resolution is 5 ms) and below deadline_ms",
            )


@dataclass(frozen=True, kw_only=True)
class PreprocessSection:
    roi: list[int] | None = setting(
        None, "region of interest [x, y, width, height] in the camera frame"
    )
    size: list[int] | None = setting(
        None, "expected model input [width, height]; must match the model"
    )
    color: Literal["gray", "rgb", "bgr"] | None = setting(
        None, "expected model colour order; must match"
    )
    camera: Path | None = setting(
        None, "camera.yaml from 'inspector calibrate camera': frames are undistorted"
    )
    corners: list[list[float]] | None = setting(
        None,
        "the part's region as four points [[x, y] x4]: top-left, top-right, bottom-right, "
        "bottom-left (in undistorted pixels when 'camera' is set), warped to warp_size",
    )
    warp_size: list[int] | None = setting(
        None, "output [width, height] of the perspective warp (default: the corners' edge lengths)"
    )

    def geometry(self):
        """The station's ``Geometry`` (ROI or corners, with the camera file's numbers).

        Raises ConfigError when a corner or the ROI lies outside the calibrated frame."""
        from ..contract.geometry import Geometry, load_camera

        camera = load_camera(self.camera) if self.camera is not None else None
        try:
            return Geometry(self.roi, self.corners, self.warp_size, camera)
        except ValueError as exc:
            raise ConfigError(f"preprocess.{exc}") from None

    def remap(self):
        """The station's geometry for ``Classifier(remap=...)``, None without one: the spec
        builds the remap tables from it once and checks each frame's size against it."""
        geometry = self.geometry()
        return None if geometry.empty else geometry

    def problems(self):
        if self.corners is not None:
            if len(self.corners) != 4 or any(len(c) != 2 for c in self.corners):
                yield (
                    "corners",
                    "must be four [x, y] points: top-left, top-right, bottom-right, bottom-left",
                )
            if self.roi is not None:
                yield "corners", "give roi or corners, not both"
        if self.warp_size is not None and (len(self.warp_size) != 2 or min(self.warp_size) <= 0):
            yield "warp_size", "must be [width, height], both positive"
        if self.warp_size is not None and self.corners is None:
            yield "warp_size", "only with corners"
        if self.roi is not None and (
            len(self.roi) != 4 or min(self.roi[2:]) <= 0 or min(self.roi[:2]) < 0
        ):
            yield (
                "roi",
                "must be [x, y, width, height] with x, y >= 0 and positive width and height",
            )
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            yield "size", "must be [width, height], both positive"


@dataclass(frozen=True, kw_only=True)
class ProviderSection:
    type: Literal["tensorrt", "cuda", "cpu"] = setting(help="execution provider")
    options: dict[str, Any] = setting(factory=dict, help="provider options passed to ONNX Runtime")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    path: Path = setting(help="the model.onnx file (with its embedded manifest)")
    providers: list[ProviderSection] = setting(
        factory=lambda: [ProviderSection(type="cpu")],
        help="execution providers, in order of preference",
    )
    require_gpu: bool = setting(False, "refuse to start when no GPU provider is active")
    max_batch: int = setting(8, "parts waiting together are classified in one batch of up to this")
    warmup_runs: int = setting(3, "inference runs before the station reports online")
    workers: int = setting(
        0,
        "classifier threads, each running its own batches on the one session (0: auto: on a "
        "CPU with 2+ cores, 2 workers with half the cores each when a lone image takes under "
        "1 ms, else 1 worker with every core; 1 with a GPU provider)",
    )
    intra_op_threads: int = setting(
        0,
        "ONNX Runtime intra-op threads per run (0: auto: the cores shared among the workers; "
        "with one worker, ONNX Runtime's default)",
    )
    io_binding: Literal["auto", "on", "off"] = setting(
        "auto",
        "hand inputs and outputs to ONNX Runtime through an IO binding (one per worker) "
        "instead of run()'s feeds (auto: on when a GPU provider is active)",
    )
    spin: bool = setting(
        True, "let ONNX Runtime's idle threads spin (its default); false frees the CPU for capture"
    )
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = setting(
        "all", "ONNX Runtime graph optimisation level"
    )
    keep: int = setting(
        3, "models kept loaded (the live one and those before it) for 'inspector model rollback'"
    )
    golden: Path | None = setting(
        None,
        "golden set (pass/ and fail/ images): a candidate model goes live only when it decides "
        "every one as filed (a swap, promote or reload on a running station)",
    )
    shadow: Path | None = setting(
        None,
        "a candidate model that decides the same parts after the live verdicts, for the record "
        "(PREFIX/shadow and the inspector_shadow_* metrics); never delays a verdict",
    )
    shadow_max_share: float = setting(
        0.3,
        "the shadow model may use at most this share of the live inference time; it "
        "skips (and counts) batches beyond it",
    )

    def problems(self):
        if self.max_batch < 1:
            yield "max_batch", "must be at least 1"
        if self.workers < 0:
            yield "workers", "must be 0 (auto) or more"
        if self.intra_op_threads < 0:
            yield "intra_op_threads", "must be 0 (auto) or more"
        if not self.providers:
            yield "providers", "name at least one execution provider"
        if self.keep < 1:
            yield "keep", "must be at least 1 (the live model)"
        if not 0.0 < self.shadow_max_share <= 1.0:
            yield "shadow_max_share", "must be more than 0 and at most 1"


@dataclass(frozen=True, kw_only=True)
class AnomalyModelSection:
    path: Path = setting(
        help="an anomaly model (manifest kind: anomaly) run on the same input as 'model'"
    )
    providers: list[ProviderSection] = setting(
        factory=lambda: [ProviderSection(type="cpu")],
        help="execution providers, in order of preference",
    )
    require_gpu: bool = setting(False, "refuse to start when no GPU provider is active")
    threshold: float | None = setting(
        None, "overrides the manifest's threshold on the anomaly score (normally 0.5)"
    )
    intra_op_threads: int = setting(
        0, "ONNX Runtime intra-op threads per run (0: as the classifier's workers get them)"
    )
    io_binding: Literal["auto", "on", "off"] = setting(
        "auto", "as model.io_binding, for this model"
    )
    spin: bool = setting(True, "as model.spin, for this model")
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = setting(
        "all", "ONNX Runtime graph optimisation level"
    )

    def model_section(self, model: ModelSection, workers: int) -> ModelSection:
        """The settings ``Classifier`` takes: this model's own, and the batch size, warm-up
        and worker count of the station's classifier (its workers run both models)."""
        return ModelSection(
            path=self.path,
            providers=self.providers,
            require_gpu=self.require_gpu,
            max_batch=model.max_batch,
            warmup_runs=model.warmup_runs,
            workers=workers,
            intra_op_threads=self.intra_op_threads,
            io_binding=self.io_binding,
            spin=self.spin,
            graph_optimization=self.graph_optimization,
        )

    def problems(self):
        if self.intra_op_threads < 0:
            yield "intra_op_threads", "must be 0 (auto) or more"
        if not self.providers:
            yield "providers", "name at least one execution provider"
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            yield "threshold", "must be between 0 and 1"


@dataclass(frozen=True, kw_only=True)
class DecisionSection:
    thresholds: dict[str, float] = setting(
        factory=dict, help="per defect class: overrides the manifest's threshold"
    )
    uncertainty_margin: Any = setting(
        0.0,
        "scores within this margin below a threshold fail with reason 'uncertain' (a number "
        "in [0, 1)); auto: the band the model chose on validation (its manifest's "
        "thresholds.<class>.uncertain_band; none there: no band)",
    )

    def problems(self):
        for name, t in self.thresholds.items():
            if not 0.0 <= t <= 1.0:
                yield f"thresholds.{name}", "must be between 0 and 1"
        m = self.uncertainty_margin
        if isinstance(m, str):
            if m != "auto":
                yield "uncertainty_margin", f"a number in [0, 1) or auto, got {m!r}"
        elif not isinstance(m, (int, float)) or isinstance(m, bool):
            yield "uncertainty_margin", f"a number in [0, 1) or auto, got {m!r}"
        elif not math.isfinite(m):
            yield "uncertainty_margin", f"must be a finite number, got {m!r}"
        elif not 0.0 <= m < 1.0:
            yield "uncertainty_margin", "must be between 0 and 1"


@dataclass(frozen=True, kw_only=True)
class RecorderSection:
    enabled: bool = setting(True, "keep images of failed/uncertain parts and a sample of passes")
    path: Path = setting(Path("recordings"), "folder for kept images and their JSON sidecars")
    pass_sample_rate: float = setting(0.01, "fraction of passed parts to keep (0..1)")
    quota_mb: float = setting(1024.0, "disk quota; the oldest recordings are deleted first")
    format: Literal["png", "jpg"] = setting("png", "image format (png is lossless)")
    queue_size: int = setting(64, "recordings waiting for the disk; more are dropped and counted")

    def problems(self):
        if not 0.0 <= self.pass_sample_rate <= 1.0:
            yield "pass_sample_rate", "must be between 0 and 1"
        if self.quota_mb <= 0:
            yield "quota_mb", "must be positive"
        if self.queue_size < 1:
            yield "queue_size", "must be at least 1 (it holds full frames: it must be bounded)"


@dataclass(frozen=True, kw_only=True)
class MetricsSection:
    enabled: bool = setting(True, "serve /metrics (Prometheus) and /health over HTTP")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(9108, "port (0: any free port)")
    max_frame_age_s: float = setting(5.0, "/health fails when no frame arrived for this long")

    def problems(self):
        if not 0 <= self.port <= 65535:
            yield "port", "must be between 0 and 65535 (0: any free port)"
        if self.max_frame_age_s <= 0:
            yield "max_frame_age_s", "must be positive"


@dataclass(frozen=True, kw_only=True)
class PipelineSection:
    queue_size: int = setting(
        32, "captured parts waiting for the classifier; more fail with 'overflow'"
    )
    when_full: Literal["fail", "wait"] = setting(
        "fail",
        "a full queue: fail the part with 'overflow' (cameras: a frame cannot wait), or "
        "wait for room (replaying a folder or video: capacity is the only limit; each "
        "part's deadline still holds)",
    )

    def problems(self):
        if self.queue_size < 1:
            yield "queue_size", "must be at least 1"


@dataclass(frozen=True, kw_only=True)
class TestingSection:
    model_delay_file: Path | None = setting(
        None,
        "fault injection for 'inspector simulate': while this file exists, each inference "
        "batch is delayed by the milliseconds it holds. Leave unset in production.",
    )


@dataclass(frozen=True, kw_only=True)
class StationConfig:
    station: StationSection = setting(factory=StationSection, help="")
    source: Tagged("source", _sources) = setting(help="where frames come from")  # type: ignore[valid-type]
    trigger: TriggerSection = setting(factory=TriggerSection, help="")
    part: PartSection = setting(factory=PartSection, help="")
    preprocess: PreprocessSection = setting(factory=PreprocessSection, help="")
    model: ModelSection = setting(help="")
    anomaly_model: AnomalyModelSection | None = setting(
        None,
        "a second model, of good parts only, on the same input: a part fails when either "
        "model fails it (the hot swap changes 'model' only)",
    )
    decision: DecisionSection = setting(factory=DecisionSection, help="")
    mqtt: MqttSection = setting(factory=MqttSection, help="")
    recorder: RecorderSection = setting(factory=RecorderSection, help="")
    metrics: MetricsSection = setting(factory=MetricsSection, help="")
    logging: LoggingSection = setting(factory=LoggingSection, help="")
    pipeline: PipelineSection = setting(factory=PipelineSection, help="")
    quality: QualitySection = setting(factory=QualitySection, help="image-quality watch")
    plant: PlantSection = setting(
        factory=PlantSection, help="the plant's views: Sparkplug B and OPC UA (both optional)"
    )
    testing: TestingSection = setting(factory=TestingSection, help="")
    config_path: Path | None = setting(None, "(set by the loader)")

    @property
    def prefix(self) -> str:
        return self.mqtt.prefix or f"inspector/{self.station.id}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"inspector-{self.station.id}"

    def topic(self, name: str) -> str:
        if name == "trigger" and self.trigger.topic:
            return self.trigger.topic
        return f"{self.prefix}/{name}"


def load_config(path: str | Path) -> StationConfig:
    """Load and validate a station config; raises ConfigError listing every problem."""
    path = Path(path)
    cfg = load_yaml(StationConfig, path)
    if cfg.config_path is not None:
        raise ConfigError(f"{path}: config_path: set by the loader, not in the file")
    return replace(cfg, config_path=path.resolve())
