"""The demo's QA workbench (``inspector demo --serve``): ``inspector review`` as a process of
its own on the demo's folder, connected to the demo's broker, so a newcomer goes from the
replay straight to the dashboard with the line still live: the station's status, the SPC
service's active alarms, and promotions that the running station answers.

Only the public commands are used (the lab never imports the workbench): the config is
written to ``DEMO/review.yaml``, the first user is added with ``--add-user`` (the password
from ``$INSPECTOR_REVIEW_PASSWORD``, else a fresh one printed once), then the server runs
until the demo ends.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InspectorError
from .demospc import stop_process

USER = "qa"
PASSWORD_ENV = "INSPECTOR_REVIEW_PASSWORD"


def review_yaml(work: Path, port: int, host: str, broker_port: int, prefix: str) -> str:
    """The example config (deploy/examples/review.yaml) with the demo's folder written out and
    the live station's broker filled in."""
    w = Path(work).resolve()
    return f"""\
# The demo's QA workbench (inspector demo --serve writes it); the same as
# deploy/examples/review.yaml with INSPECTOR_HOME={w} and the demo's broker.
server:
  host: 127.0.0.1
  port: {port}
database: "{w}/review/review.sqlite"
cache: "{w}/review/cache"
rescan_s: 5
recordings:
  - station: demo
    path: "{w}/recordings"
dataset:
  path: "{w}/datasets/reviewed"
  good: good
  defects: [defect]
training:
  runs: "{w}/runs"
  epochs: 20
  args: [--image-size, "128"]
reports: ["{w}/reports"]
models:
  registry: ["{w}/runs"]
  stations:
    - name: demo
      config: "{w}/station.yaml"
      golden: "{w}/golden/demo"
      models: "{w}/models"
      mqtt: {{host: {host}, port: {broker_port}, protocol: "5", prefix: {prefix}}}
"""


class DemoWorkbench:
    """The workbench process; its output goes to ``review.log`` in the demo's folder."""

    def __init__(self, work: Path, port: int, host: str, broker_port: int, prefix: str) -> None:
        self.work = Path(work)
        self.port = port
        self.config = self.work / "review.yaml"
        self.config.write_text(review_yaml(work, port, host, broker_port, prefix))
        self.log_path = self.work / "review.log"
        self.url = f"http://127.0.0.1:{port}/"
        self.password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(9)
        self.generated = PASSWORD_ENV not in os.environ
        self.proc: subprocess.Popen | None = None

    def _inspector(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "inspector.cli",
            "review",
            "--config",
            str(self.config),
            *args,
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Add the user, start the server, wait until it answers (InspectorError if not)."""
        env = {**os.environ, PASSWORD_ENV: self.password}
        r = subprocess.run(
            self._inspector("--add-user", USER, "--role", "admin"),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise InspectorError(f"the workbench's user could not be added: {r.stderr.strip()}")
        log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (the process holds it)
        self.proc = subprocess.Popen(self._inspector(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise InspectorError(f"the workbench did not start: see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "login", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise InspectorError(
            f"the workbench did not answer within {timeout:.0f} s: {self.log_path}"
        )

    def lines(self) -> list[str]:
        """What the demo prints once the workbench is up."""
        told = f"password {self.password}" if self.generated else f"the password in ${PASSWORD_ENV}"
        return [
            f"the QA workbench, live on the demo's line: {self.url}dashboard",
            f"  log in as {USER} with {told}",
            "  the station and SPC keep running; promote a model and the station answers",
            "  Ctrl-C ends the demo (its folder stays)",
        ]

    def stop(self) -> None:
        stop_process(self.proc)
