"""Golden samples: known-good and known-bad parts through the station's real path.

    inspector verify STATION.yaml GOLDEN_DIR      # GOLDEN_DIR/pass/*, GOLDEN_DIR/fail/*
    inspector verify STATION.yaml GOLDEN_DIR --model candidate.onnx   # before promoting

Each image goes through the same preprocessing (ROI, calibration remap), model unit
(classifier and anomaly model, combined as on the line) and thresholds as on the line;
the station's ``acceptance`` rule is asked first. Any disagreement fails the check (exit 1). The outcome is
published, retained, on ``PREFIX/status/verify`` so the line can see when the station
was last proven. Run it at shift start and after every model change.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from inspector.contract.mqtt import new_client
from inspector.contract.topics import Topics
from inspector.errors import InspectorError
from inspector.station.acceptance import (
    GoldenResult,
    acceptance,
    golden_images,
    golden_results,
    station_spec,
)
from inspector.station.config import StationConfig, load_config
from inspector.station.unit import load_unit

log = logging.getLogger(__name__)
__all__ = ["GoldenResult", "golden_images", "publish_outcome", "run_verify", "verify"]


def verify(
    cfg: StationConfig, folder: Path, model: Path | None = None
) -> tuple[list[GoldenResult], str]:
    """Each golden part through the station's unit (``model`` in place of ``model.path``
    when given) and the line's own decision rule. A unit the station's ``acceptance`` refuses
    before the golden parts is an InspectorError naming why."""
    unit = load_unit(cfg, model)
    problems = acceptance(cfg, unit)
    if problems:
        raise InspectorError(*problems)
    return golden_results(unit, station_spec(cfg, unit), folder), unit.model_id


def publish_outcome(cfg: StationConfig, results: list[GoldenResult], model_id: str) -> bool:
    """Retained on PREFIX/status/verify; False (and a warning) when the broker can't be reached."""
    bad = [r.image for r in results if not r.agrees]
    payload = json.dumps(
        {
            "schema": 1,
            "station": cfg.station.id,
            "model_id": model_id,
            "passed": not bad,
            "checked": len(results),
            "disagreements": bad,
            "ts": time.time(),
        }
    )
    client = new_client(cfg.mqtt, f"{cfg.client_id}-verify")
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, 5)
        client.loop_start()
        info = client.publish(Topics.of(cfg.prefix).verify, payload, qos=1, retain=True)
        info.wait_for_publish(5)
        ok = info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("could not publish the verification outcome: %s", exc)
        return False
    finally:
        client.loop_stop()
        client.disconnect()
    return ok


def run_verify(
    config: Path, folder: Path, publish: bool = True, out=print, model: Path | None = None
) -> int:
    """``inspector verify``; ``model``: verify this file as the station's model (nothing is
    written; the outcome is published only for the station's own model)."""
    cfg = load_config(config)
    results, model_id = verify(cfg, folder, model)
    for r in results:
        mark = "ok  " if r.agrees else "DISAGREE"
        score = ", ".join(f"{k}={v:.3f}" for k, v in r.scores.items())
        out(f"{mark} {r.image}: expected {r.expected}, got {r.got} ({r.reason}) {score}")
    bad = sum(not r.agrees for r in results)
    out(f"{len(results) - bad} of {len(results)} golden parts agree; model {model_id}")
    if publish and model is None and not publish_outcome(cfg, results, model_id):
        out("warning: the outcome was not published (broker unreachable)")
    return 1 if bad else 0
