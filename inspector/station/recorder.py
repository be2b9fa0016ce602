"""Keeps images for QA: every failed or uncertain part and a sample of passes.

Each kept image is the whole raw frame, with a JSON sidecar holding the verdict record,
the model id and, under ``preprocess``, the station's frame setup (geometry: ROI or
corners and the camera calibration's numbers; bit depth): training reads it and prepares
the frame exactly as the station did (``png``, the default, keeps the frame exact; ``jpg``
does not). A part judged by an anomaly model, or failed by a classifier exported with a
class map (``heatmap.cam_level``), also keeps its heat map beside the image:
``STEM.heat.npy`` (the map on the model's feature grid, 0.5 = threshold) and
``STEM.heat.png`` (the map over the frame; over the model's input region alone when the
station crops the frame). Writing happens on a thread of its own, off the hot path; when the disk can't keep up the
recording (never the verdict) is dropped and counted. A disk quota is enforced by
deleting the oldest recordings first.

File names never come from a part id alone: the id is reduced to a short safe slug
plus a hash of the full id, and the final path is checked to lie inside the folder,
so no id (``../``, slashes, NUL, 10 kB long) can write anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..contract.preprocess import PreprocessSpec
from ..contract.records import Reason, Verdict
from .config import RecorderSection
from .metrics import Metrics

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(part_id: str, seq: int, t: float) -> str:
    """A file stem that is safe on any file system and still traceable to the part id."""
    slug = _UNSAFE.sub("_", part_id)[:40].strip("_") or "part"
    digest = hashlib.sha256(part_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{t % 1:.3f}"[1:]
    return f"{stamp}_{seq:08d}_{slug}_{digest}"


class Recorder:
    def __init__(
        self,
        cfg: RecorderSection,
        metrics: Metrics,
        seed: int | None = None,
        spec: PreprocessSpec | None = None,
    ) -> None:
        """``spec``: the station's preprocessing; its frame setup goes into every sidecar."""
        self.cfg = cfg
        self.metrics = metrics
        setup = spec.setup() if spec is not None else None
        self.setup = setup.to_dict() if setup is not None else None
        self.root = Path(cfg.path).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota = int(cfg.quota_mb * 1024 * 1024)
        self._rng = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._files: list[tuple[str, Path, int]] = []  # (name, path, bytes), oldest first
        self._used = 0
        for p in self.root.rglob("*"):
            if p.is_file() and p.suffix in (".png", ".jpg", ".json", ".npy"):
                self._files.append((p.name, p, p.stat().st_size))
        self._files.sort()
        self._used = sum(size for _, _, size in self._files)
        self.kept = 0

    def start(self) -> None:
        self._thread.start()

    def wants(self, verdict: Verdict) -> bool:
        if verdict.result == "fail":
            return True
        return self.cfg.pass_sample_rate > 0 and self._rng.random() < self.cfg.pass_sample_rate

    def offer(
        self, verdict: Verdict, image: np.ndarray | None, heatmap: np.ndarray | None = None
    ) -> None:
        """Keep this part's image (and heat map) if the policy wants it (non-blocking)."""
        if image is None or not self.wants(verdict):
            return
        try:
            self._queue.put_nowait((verdict, image, heatmap))
        except queue.Full:
            self.metrics.drop("recording")
            log.warning("recorder queue full: image of part %r not kept", verdict.part_id)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._queue.put((None, None, None))
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            verdict, image, heatmap = self._queue.get()
            if verdict is None:
                return
            try:
                self.write(verdict, image, heatmap)
            except (OSError, cv2.error, ValueError) as exc:
                self.metrics.drop("recording")
                log.error("could not keep image of part %r: %s", verdict.part_id, exc)

    def folder_for(self, verdict: Verdict) -> str:
        if verdict.result == "pass":
            return "pass"
        return "uncertain" if verdict.reason == Reason.UNCERTAIN else "fail"

    def write(self, verdict: Verdict, image: np.ndarray, heatmap: np.ndarray | None = None) -> Path:
        """Write image + sidecar (+ heat map) now (the thread calls this; tests may too)."""
        day = time.strftime("%Y-%m-%d", time.gmtime(verdict.t_verdict))
        folder = (self.root / day / self.folder_for(verdict)).resolve()
        stem = safe_name(verdict.part_id, verdict.seq, verdict.t_verdict)
        image_path = (folder / f"{stem}.{self.cfg.format}").resolve()
        if image_path.parent != folder or not folder.is_relative_to(self.root):
            raise ValueError(f"refusing to write outside {self.root}: {image_path}")
        folder.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(f".{self.cfg.format}", image)
        if not ok:
            raise ValueError("image encoding failed")
        sidecar = {
            "part_id": verdict.part_id,
            "seq": verdict.seq,
            "result": verdict.result,
            "reason": verdict.reason.value,
            "class": verdict.label,
            "scores": verdict.scores,
            "threshold": verdict.thresholds,
            "model_id": verdict.model_id,
            "t_trigger": verdict.t_trigger,
            "t_capture": verdict.t_capture,
            "t_verdict": verdict.t_verdict,
            "deadline": verdict.deadline,
            "detail": verdict.detail,
            "image": image_path.name,
        }
        if self.setup is not None:
            sidecar["preprocess"] = self.setup
        extra = self._heat_files(image_path, image, heatmap) if heatmap is not None else []
        if extra:
            sidecar["heatmap"] = {"npy": extra[0][0].name, "png": extra[1][0].name}
        data = encoded.tobytes()
        text = json.dumps(sidecar, indent=2).encode()
        self._make_room(len(data) + len(text) + sum(len(b) for _, b in extra))
        image_path.write_bytes(data)
        json_path = image_path.with_suffix(".json")
        json_path.write_bytes(text)
        written = [(image_path, len(data)), (json_path, len(text))]
        for p, blob in extra:
            p.write_bytes(blob)
            written.append((p, len(blob)))
        for p, size in written:
            self._files.append((p.name, p, size))
            self._used += size
        self.kept += 1
        return image_path

    def _heat_files(self, image_path: Path, image: np.ndarray, heatmap: np.ndarray):
        """[(STEM.heat.npy, bytes), (STEM.heat.png, bytes)] for an anomaly model's map."""
        import io

        from .heatmap import overlay, upsample

        buf = io.BytesIO()
        np.save(buf, np.asarray(heatmap, np.float32))
        whole = not (self.setup or {}).get("geometry")  # the map covers the whole frame
        if whole:
            picture = overlay(image, heatmap)
        else:  # the frame was cropped for the model: the map alone, at its own place
            level = np.clip((upsample(heatmap, (256, 256)) - 0.25) / 0.25, 0, 1)
            picture = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
        ok, png = cv2.imencode(".png", picture)
        if not ok:
            raise ValueError("heat map encoding failed")
        stem = image_path.with_suffix("")
        return [
            (stem.with_name(stem.name + ".heat.npy"), buf.getvalue()),
            (stem.with_name(stem.name + ".heat.png"), png.tobytes()),
        ]

    def _make_room(self, need: int) -> None:
        if self._used + need <= self.quota:
            return
        self._files.sort()
        while self._files and self._used + need > self.quota:
            _, path, size = self._files.pop(0)
            path.unlink(missing_ok=True)
            self._used -= size
            self.metrics.drop("recording_deleted_for_quota")
