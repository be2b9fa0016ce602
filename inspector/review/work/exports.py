"""Exports started from the train page: ``inspector export RUN --out
RUN/export-<time>/model.onnx`` with the options the engineer ticked (test-time flips, the
FP16 and INT8 variants, another finished run to average with, and, for an admin, a run that
learned too little). The new folder is
a model the registry lists when the runs folder is one of its roots; export's own checks
(parity, the quality gate) decide whether it is written."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...errors import InspectorError
from .processes import Processes

# form field -> (export's flag, what the page calls it)
OPTIONS = {
    "tta": ("--tta", "test-time flips in the graph (up to 8x the network per image)"),
    "fp16": ("--fp16", "an FP16 variant (for the GPU)"),
    "int8": ("--int8", "an INT8 variant (for the CPU)"),
    "force": ("--force", "even if it learned too little (admin; the manifest records it)"),
}


class Exports(Processes):
    def __init__(self, registry: list[Path]) -> None:
        super().__init__()
        self.registry = [Path(r) for r in registry]

    def command(
        self, run: Path, out: Path, options: list[str], members: list[Path] = ()
    ) -> list[str]:
        flags = [OPTIONS[o][0] for o in OPTIONS if o in options]
        flags += [a for m in members for a in ("--with", str(m))]
        return [sys.executable, "-m", "inspector.cli", "export", str(run), "--out", str(out),
                *flags]  # fmt: skip

    def start(
        self,
        run: Path,
        name: str,
        options: list[str],
        user: str,
        members: list[tuple[Path, str]] = (),
    ) -> int:
        """``members``: (run folder, name) of the runs averaged with this one (``--with``)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InspectorError(f"export: unknown option(s) {', '.join(unknown)}")
        run = Path(run)
        if not (run / "run.json").is_file():
            raise InspectorError(f"run {name} has not finished training: nothing to export yet")
        with self._lock:
            going = [r for r in self.runs.values() if r["proc"].poll() is None]
        if any(r["run"] == run for r in going):
            raise InspectorError(f"run {name} is being exported already; one at a time per run")
        suffix = ("-ensemble" if members else "") + ("-tta" if "tta" in options else "")
        folder = run / f"export-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
        if folder.exists() or folder.is_symlink():
            raise InspectorError(f"{folder.name} exists already in run {name}; try again")
        folder.mkdir()
        out = folder / "model.onnx"
        cmd = self.command(run, out, options, [m for m, _ in members])
        return self.launch(cmd, folder / "export.log", run=run, name=name, out=out,
                           options=[o for o in OPTIONS if o in options], user=user,
                           members=[n for _, n in members])  # fmt: skip

    def get(self, xid: int) -> dict | None:
        found = self.state(xid)
        if found is None:
            return None
        run, page = found
        folder = run["out"].parent
        return {
            **page,
            "name": run["name"],
            "options": [OPTIONS[o][1] for o in run["options"]]
            + [f"averaged with run {n} (an ensemble)" for n in run.get("members", [])],
            "folder": str(folder),
            "written": run["out"].is_file() and page["status"] == "done",
            "registry_name": self._registry_name(folder),
        }

    def _registry_name(self, folder: Path) -> str | None:
        """The name the models page gives the folder (registry.find's), when it lies in one of
        the registry's folders."""
        folder = folder.resolve()
        for root in self.registry:
            if folder.is_relative_to(root.resolve()):
                return f"{root.name}/{folder.relative_to(root.resolve()).as_posix()}"
        return None
