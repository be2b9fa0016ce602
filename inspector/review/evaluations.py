"""Evaluations started from the models page: ``inspector evaluate MODEL --data DATASET
--out REPORTS/<name>`` as a process of its own, so its report lands where compare finds it.

They are kept in memory (an evaluation takes seconds; its report stays on disk after a
restart). Nothing here computes a metric: ``evaluate`` writes the report.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import InspectorError
from .registry import slug

IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class Evaluations:
    def __init__(self, dataset: Path, reports: list[Path]) -> None:
        self.dataset = Path(dataset)
        self.reports = [Path(r) for r in reports]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.runs: dict[int, dict] = {}

    def command(self, model: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "inspector.cli", "evaluate", str(model),
                "--data", str(self.dataset), "--out", str(out)]  # fmt: skip

    def start(self, name: str, folder: Path, user: str) -> int:
        if not self.reports:
            raise InspectorError("the config names no reports folder to write the report into")
        if not any(p.suffix.lower() in IMAGES for p in self.dataset.rglob("*")):
            raise InspectorError(f"the reviewed dataset {self.dataset} has no images yet")
        out = self.reports[0] / f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        out.parent.mkdir(parents=True, exist_ok=True)
        log = out.parent / f".{out.name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                self.command(Path(folder) / "model.onnx", out),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            eid = next(self._ids)
            self.runs[eid] = {"id": eid, "model": name, "user": user, "out": out, "log": log,
                              "proc": proc, "started": time.time(), "ended": None}  # fmt: skip
        return eid

    def get(self, eid: int) -> dict | None:
        with self._lock:
            run = self.runs.get(eid)
        if run is None:
            return None
        code = run["proc"].poll()
        if code is not None and run["ended"] is None:
            run["ended"] = time.time()
        status = "running" if code is None else ("done" if code == 0 else "failed")
        try:
            tail = run["log"].read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            tail = ""
        root = self.reports[0]
        return {
            **{k: run[k] for k in ("id", "model", "user", "started", "ended")},
            "status": status,
            "log": tail,
            "report": f"{root.name}/{run['out'].relative_to(root).as_posix()}",
            "html": (run["out"] / "report.html").is_file(),
        }

    def stop(self) -> None:
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            if run["proc"].poll() is None:
                run["proc"].terminate()
