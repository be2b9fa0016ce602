"""Training runs started from the page: ``inspector train`` in a process of its own.

The process is started in a new session (it outlives a browser reload and the request),
its output goes to ``RUN/train.log``; progress is read from the run's ``history.csv``
(one row per epoch). One run at a time. After an app restart a run still going is found
by its pid; a run whose process is gone is done when ``run.json`` exists, failed if not.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ...errors import InspectorError
from ..config import TrainingSection
from ..db.store import Store
from ..figures.plots import history_chart

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Jobs:
    def __init__(self, cfg: TrainingSection, data: Path, store: Store) -> None:
        self.cfg = cfg
        self.data = Path(data)
        self.store = store
        self.procs: dict[int, subprocess.Popen] = {}

    def command(self, out: Path, epochs: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "inspector.cli",
            "train",
            "--data",
            str(self.data),
            "--out",
            str(out),
            "--epochs",
            str(epochs),
            "--export",  # a finished run is a model the registry lists, ready to promote
        ]
        if self.cfg.config is not None:
            cmd += ["--config", str(self.cfg.config)]
        return cmd + list(self.cfg.args)

    def start(self, name: str, epochs: int, user: str) -> int:
        self.refresh()
        if self.store.active_runs():
            raise InspectorError("a training run is already going; one at a time")
        if not _NAME.match(name):
            raise InspectorError(f"run name {name!r}: letters, digits, . _ - (up to 64)")
        if not 1 <= epochs <= 10_000:
            raise InspectorError("epochs: between 1 and 10000")
        out = (Path(self.cfg.runs) / name).resolve()
        if out.exists() or (Path(self.cfg.runs) / name).is_symlink():
            raise InspectorError(f"run {name!r} exists already in {self.cfg.runs}")
        out.mkdir(parents=True)
        rid = self.store.add_run(name, str(out), user, epochs)
        try:
            with open(out / "train.log", "wb") as logf:  # the child keeps its own copy
                proc = subprocess.Popen(
                    self.command(out, epochs),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as exc:
            self.store.set_run(rid, status="failed", ended=time.time())
            raise InspectorError(f"cannot start inspector train: {exc}") from None
        self.procs[rid] = proc
        self.store.set_run(rid, pid=proc.pid, status="running")
        log.info("training run %s started (pid %d) by %s", name, proc.pid, user)
        return rid

    def refresh(self) -> None:
        """Bring the status of running runs up to date."""
        for run in self.store.active_runs():
            proc = self.procs.get(run["id"])
            if proc is not None:
                code = proc.poll()
                if code is None:
                    continue
                self.procs.pop(run["id"], None)
            elif run["pid"] and _alive(run["pid"]):
                continue
            else:
                code = None
            done = (Path(run["out"]) / "run.json").is_file()
            status = "cancelled" if run["status"] == "cancelling" else None
            status = status or ("done" if (code == 0 if code is not None else done) else "failed")
            self.store.set_run(run["id"], status=status, ended=time.time(), returncode=code)

    def cancel(self, rid: int) -> bool:
        self.refresh()
        run = self.store.run(rid)
        if run is None or run["status"] not in ("starting", "running") or not run["pid"]:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run["pid"], signal.SIGTERM)
        proc = self.procs.pop(rid, None)
        code = None
        if proc is not None:
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(run["pid"], signal.SIGKILL)
                code = proc.wait(5)
        self.store.set_run(rid, status="cancelled", ended=time.time(), returncode=code)
        return True

    def progress(self, run: dict) -> dict:
        """Epochs done, the last epoch's metrics, ETA and the log's tail."""
        out = Path(run["out"])
        rows = _history(out / "history.csv")
        done = len(rows)
        elapsed = (run["ended"] or time.time()) - run["started"]
        eta = (
            elapsed / done * (run["epochs"] - done) if done and run["status"] == "running" else None
        )
        last = rows[-1] if rows else {}
        metrics = {k: v for k, v in last.items() if k != "epoch"}
        return {
            "done": done,
            "total": run["epochs"],
            "eta_s": eta,
            "elapsed_s": elapsed,
            "metrics": metrics,
            "percent": min(100, round(100 * done / max(1, run["epochs"]))),
            "log": _tail(out / "train.log"),
            "chart": history_chart(rows),
        }

    def default_name(self) -> str:
        return time.strftime("review-%Y%m%d-%H%M%S")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours (the app started it and has not reaped it yet) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _history(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
