"""The station's state, retained status and health: what ``/health``, the systemd watchdog
and the status topic say about a ``Station`` (read-only; the pipeline owns the state)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import Station


class Health:
    def __init__(self, station: Station) -> None:
        self.s = station

    def state(self) -> str:
        s = self.s
        if s._stopping.is_set():
            return "offline"
        if not s.ready or s.source.state == "starting":
            return "starting"
        if s._halted:  # a plant view stopped inspection (OPC UA Halt, Stop ...)
            return "halted"
        if s.source.state != "ok" or s._geometry_problem or self._quality_problems():
            return "degraded"
        return "online"

    def status_payload(self) -> dict:
        s = self.s
        live = s.models.live
        return {
            "schema": 1,
            "station": s.station_id,
            "state": self.state(),
            "model_id": live.model_id,
            "anomaly_model_id": live.anomaly_model_id,
            "providers": live.classifier.providers,
            "model": s.models.status(),
            "camera": s.source.state,
            **_camera_stats(s.source.source),
            "detail": "; ".join(
                filter(
                    None,
                    [s._halted, s.source.detail, s._geometry_problem, *self._quality_problems()],
                )
            ),
            "quality": None
            if s.quality is None
            else {
                "problems": list(s.quality.problems),
                "measures": {k: round(v, 4) for k, v in s.quality.current.items()},
            },
            "ts": time.time(),
        }

    def _quality_problems(self) -> list[str]:
        q = self.s.quality
        return list(q.problems) if q is not None else []

    def check(self) -> tuple[bool, dict]:
        """``/health``: healthy while the station can inspect a part now: started, camera
        connected, link connected, no classifier worker or capture loop stuck, frames that
        fit the geometry, not halted by a plant view, and (unless a hardware-triggered camera
        may be idle between parts) a frame within ``metrics.max_frame_age_s``. ``reason``
        says what is wrong."""
        s = self.s
        limit = s.cfg.metrics.max_frame_age_s
        age = time.monotonic() - s.last_frame_mono if s.last_frame_mono else None
        broker_ok = s.link.connected.is_set()
        problems = [] if s.ready else [f"station {self.state()}"]
        if s.source.state != "ok":
            problems.append(f"camera {s.source.state}: {s.source.detail}".rstrip(": "))
        elif s.mode != "camera" and (age is None or age > limit):
            problems.append("no frame yet" if age is None else f"no frame for {age:.1f} s")
        if not broker_ok:
            problems.append("not connected to the MQTT broker")
        problems += self.stalls(limit, limit)
        if s._geometry_problem:
            problems.append(s._geometry_problem)
        if s._halted:
            problems.append(s._halted)
        return not problems, {
            "state": self.state(),
            "camera": s.source.state,
            "last_frame_age_s": None if age is None else round(age, 3),
            "broker_connected": broker_ok,
            "reason": "; ".join(problems),
        }

    def alive(self, max_age_s: float) -> bool:
        """True while every classifier worker (and, unless the camera is hardware-triggered and
        may be silent, the capture loop) went round within ``max_age_s``: the systemd watchdog.
        One worker stuck in a run is enough to call the station hung. The capture loop gets at
        least 5.5 s: a lost source is retried after up to 5 s."""
        capture_max = max(max_age_s, 5.5)
        if self.stalls(max_age_s, capture_max):
            return False
        s = self.s
        return s.mode == "camera" or time.monotonic() - s._beats["capture"] <= capture_max

    def stalls(self, max_age_s: float, capture_max_age_s: float) -> list[str]:
        """What is stuck: a classifier worker that has not come round within ``max_age_s``
        (stuck in a run), the capture loop busy with one frame for ``capture_max_age_s``
        (preprocessing, queueing). Waiting for the source is not counted here: a triggered
        camera may be silent, and a source's own timeouts and state cover a lost one."""
        s = self.s
        now = time.monotonic()
        stalls = [
            f"classifier worker {name} stuck for {now - t:.1f} s"
            for name, t in s._beats.items()
            if name != "capture" and now - t > max_age_s
        ]
        busy = now - s._beats["capture"]
        if not s._capture_waiting and busy > capture_max_age_s:
            stalls.append(f"capture loop stuck on a frame for {busy:.1f} s")
        return stalls


def _camera_stats(source) -> dict:
    """``camera_stats``: a camera source's counters and identity (frames, incomplete, lost,
    clock offset, temperature, link speed …) when it has them."""
    stats = getattr(source, "stats", None)
    if stats is None:
        return {}
    try:
        return {"camera_stats": stats()}
    except Exception:  # a camera going away: the status still goes out
        return {}
