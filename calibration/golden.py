"""Golden samples: known-good and known-bad parts through the station's real path.

    inspector verify STATION.yaml GOLDEN_DIR      # GOLDEN_DIR/pass/*, GOLDEN_DIR/fail/*

Each image goes through the same preprocessing (ROI, calibration remap), model and
thresholds as on the line. Any disagreement fails the check (exit 1). The outcome is
published, retained, on ``PREFIX/status/verify`` so the line can see when the station
was last proven. Run it at shift start and after every model change.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from inspector.contract.mqtt import secure
from inspector.contract.preprocess import FrameError, preprocess
from inspector.errors import InspectorError
from inspector.station.check import setup_problems, station_model
from inspector.station.classifier import check_model_fits
from inspector.station.config import StationConfig, load_config
from inspector.station.decision import Decider
from inspector.station.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass
class GoldenResult:
    image: str
    expected: str
    got: str
    reason: str
    scores: dict[str, float]

    @property
    def agrees(self) -> bool:
        return self.expected == self.got


def golden_images(folder: Path) -> list[tuple[Path, str]]:
    folder = Path(folder)
    items = []
    for expected in ("pass", "fail"):
        sub = folder / expected
        if sub.is_dir():
            items += [
                (p, expected) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
    if not items:
        raise InspectorError(
            f"{folder}: no golden images (expected pass/ and fail/ folders of images)"
        )
    return items


def verify(cfg: StationConfig, folder: Path) -> tuple[list[GoldenResult], str]:
    clf, spec = station_model(cfg)
    problems = check_model_fits(cfg, clf) + setup_problems(cfg, clf.manifest, [])
    if problems:
        raise InspectorError(*problems)
    decider = Decider(clf.manifest, cfg.decision.thresholds, cfg.decision.uncertainty_margin)
    results = []
    for path, expected in golden_images(folder):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        try:
            if image is None:
                raise FrameError("unreadable image")
            x = preprocess(image, spec)
        except FrameError as exc:
            results.append(
                GoldenResult(f"{expected}/{path.name}", expected, "fail", f"unreadable: {exc}", {})
            )
            continue
        d = decider.decide(clf.run(x[None])[0])
        results.append(
            GoldenResult(f"{expected}/{path.name}", expected, d.result, d.reason.value, d.scores)
        )
    return results, clf.model_id


def publish_outcome(cfg: StationConfig, results: list[GoldenResult], model_id: str) -> bool:
    """Retained on PREFIX/status/verify; False (and a warning) when the broker can't be reached."""
    import paho.mqtt.client as mqtt

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
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id}-verify",
        protocol=mqtt.MQTTv5 if cfg.mqtt.protocol == "5" else mqtt.MQTTv311,
    )
    secure(client, cfg.mqtt)
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, 5)
        client.loop_start()
        info = client.publish(f"{cfg.prefix}/status/verify", payload, qos=1, retain=True)
        info.wait_for_publish(5)
        ok = info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("could not publish the verification outcome: %s", exc)
        return False
    finally:
        client.loop_stop()
        client.disconnect()
    return ok


def run_verify(config: Path, folder: Path, publish: bool = True, out=print) -> int:
    cfg = load_config(config)
    results, model_id = verify(cfg, folder)
    for r in results:
        mark = "ok  " if r.agrees else "DISAGREE"
        score = ", ".join(f"{k}={v:.3f}" for k, v in r.scores.items())
        out(f"{mark} {r.image}: expected {r.expected}, got {r.got} ({r.reason}) {score}")
    bad = sum(not r.agrees for r in results)
    out(f"{len(results) - bad} of {len(results)} golden parts agree; model {model_id}")
    if publish and not publish_outcome(cfg, results, model_id):
        out("warning: the outcome was not published (broker unreachable)")
    return 1 if bad else 0
