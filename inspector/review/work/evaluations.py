"""Evaluations started from the models page: ``inspector evaluate MODEL --data DATASET
--out REPORTS/<name>`` as a process of its own, so its report lands where compare finds it.
Nothing here computes a metric: ``evaluate`` writes the report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...errors import InspectorError
from .processes import Processes
from .registry import slug

IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class Evaluations(Processes):
    def __init__(self, dataset: Path, reports: list[Path]) -> None:
        super().__init__()
        self.dataset = Path(dataset)
        self.reports = [Path(r) for r in reports]

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
        cmd = self.command(Path(folder) / "model.onnx", out)
        return self.launch(cmd, log, model=name, user=user, out=out)

    def get(self, eid: int) -> dict | None:
        found = self.state(eid)
        if found is None:
            return None
        run, page = found
        root = self.reports[0]
        return {
            **page,
            "model": run["model"],
            "report": f"{root.name}/{run['out'].relative_to(root).as_posix()}",
            "html": (run["out"] / "report.html").is_file(),
        }
