"""Commands the workbench starts from a page as processes of their own (``inspector
evaluate``, ``inspector export``): their output goes to a log file, the page polls their
block. They are kept in memory (each takes seconds to minutes; what they write stays on disk
after a restart)."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from pathlib import Path

from ...errors import InspectorError


class Processes:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.runs: dict[int, dict] = {}

    def launch(self, cmd: list[str], log: Path, **about) -> int:
        """Start ``cmd`` with its output in ``log``; ``about`` is kept with it for the page."""
        try:
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    cmd,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as exc:
            raise InspectorError(f"cannot start {' '.join(cmd[:4])}: {exc}") from None
        with self._lock:
            pid = next(self._ids)
            self.runs[pid] = {**about, "id": pid, "log": log, "proc": proc,
                              "started": time.time(), "ended": None}  # fmt: skip
        return pid

    def state(self, pid: int) -> tuple[dict, dict] | None:
        """(the run as started, its page fields: id, started, ended, status, log's tail)."""
        with self._lock:
            run = self.runs.get(pid)
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
        page = {k: run[k] for k in ("id", "user", "started", "ended")}
        return run, {**page, "status": status, "log": tail}

    def stop(self) -> None:
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            if run["proc"].poll() is None:
                run["proc"].terminate()
