"""A real GigE Vision camera for the tests: Aravis' ``arv-fake-gv-camera-0.8`` on 127.0.0.1,
as its own process (so it can be killed and started again), optionally dropping packets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

FAKE_GV = "arv-fake-gv-camera-0.8"


def need_aravis():
    """Skip (saying what to install) where Aravis or its fake camera is missing; CI has both
    (make test-deps installs gir1.2-aravis-0.8 aravis-tools)."""
    from inspector.errors import SourceError
    from inspector.station.genicam_features import aravis

    try:
        aravis()
    except SourceError as exc:
        pytest.skip(str(exc))
    if shutil.which(FAKE_GV) is None:
        pytest.skip(f"{FAKE_GV} is not installed (sudo apt-get install aravis-tools)")


class FakeGvCamera:
    def __init__(self, serial: str, loss_per_thousand: int = 0) -> None:
        self.serial = serial
        self.loss = loss_per_thousand
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> FakeGvCamera:
        from inspector.errors import SourceError
        from inspector.station.genicam_features import find_device

        cmd = [FAKE_GV, "-i", "127.0.0.1", "-s", self.serial]
        if self.loss:
            cmd += ["-r", str(self.loss)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:  # discoverable: it answers GigE Vision discovery
            try:
                find_device(serial=self.serial)
                return self
            except SourceError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{FAKE_GV} exited with {self.proc.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError(f"{FAKE_GV} -s {self.serial} was not discovered in {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream, as when its cable is pulled."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


def cameras():
    """For a test module's fixture: yields make(serial, loss_per_thousand=0) -> a started
    FakeGvCamera, and kills every camera it made afterwards."""
    need_aravis()
    made: list[FakeGvCamera] = []

    def make(serial: str = "GV01", loss_per_thousand: int = 0) -> FakeGvCamera:
        cam = FakeGvCamera(serial, loss_per_thousand).start()
        made.append(cam)
        return cam

    yield make
    for cam in made:
        cam.kill()
