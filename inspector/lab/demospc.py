"""The demo's SPC service: ``inspector spc --config DEMO/spc.yaml`` as a process of its own
on the demo's broker, with subgroups small enough for a short replay (20 parts, limits
from the first 5), so the replay's drift raises a real alarm while the demo runs.

Only the public command is used (the lab never imports the SPC service). If it does not
start, the demo says so and goes on without it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

READY = "SPC service: alarms on"  # the service's start-up line (inspector.spc.commands)
SUBGROUP, BASELINE = 20, 5


def spc_yaml(host: str, port: int, protocol: str) -> str:
    return f"""\
# The demo's SPC service (inspector demo writes it): small subgroups for a short replay.
mqtt:
  host: {host}
  port: {port}
  protocol: "{protocol}"
  prefix: inspector
  client_id: inspector-demo-spc
subscribe:
  verdicts: [inspector/+/verdict]
store:
  url: spc/spc.sqlite
charts:
  subgroup_parts: {SUBGROUP}
  baseline_subgroups: {BASELINE}
  reorder_s: 0.3  # one local station, nothing redelivered: alarms while the replay runs
http:
  enabled: false
logging:
  level: INFO
"""


class DemoSpc:
    """The SPC process; its output goes to ``spc.log`` in the demo's folder."""

    def __init__(self, work: Path, host: str, port: int, protocol: str) -> None:
        self.work = Path(work)
        self.config = self.work / "spc.yaml"
        self.config.write_text(spc_yaml(host, port, protocol))
        (self.work / "spc").mkdir(exist_ok=True)
        for old in (self.work / "spc").glob("spc.sqlite*"):  # each run is a fresh line:
            old.unlink()  # a kept history's limits and open alarms would date from the last
        self.log_path = self.work / "spc.log"
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()

    def start(self, timeout: float = 30.0) -> bool:
        """Start it and wait until it listens; False (and the reason in spc.log) if not."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "spc", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, name="demo-spc-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def _drain(self) -> None:
        with open(self.log_path, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if READY in line:
                    self.ready.set()

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None) -> None:
    """Terminate a service the demo started (SIGTERM, then SIGKILL after 15 s)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
