"""Reject actuators for the gate, chosen by ``actuator.type``: ``log``, ``command``, ``gpio``.

A reject pulse is scheduled for the moment the part reaches the gate and lasts
``pulse_ms``. A part due before the output could be released and re-armed
(``min_spacing_ms`` after the pulse) shares the pulse, which is stretched to cover it:
a reject is never dropped or fired late for a part on the belt.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Literal

from ..contract.schema import Registry, setting
from ..errors import ConfigError

log = logging.getLogger(__name__)

ACTUATORS = Registry()
ACTUATOR_TYPES = ACTUATORS.types
register = ACTUATORS.register


@dataclass(frozen=True, kw_only=True)
class LogActuatorConfig:
    type: Literal["log"] = "log"
    pulse_ms: float = setting(50.0, "how long the reject output stays on")
    min_spacing_ms: float = setting(100.0, "shortest time between two pulses")


@dataclass(frozen=True, kw_only=True)
class CommandActuatorConfig:
    type: Literal["command"] = "command"
    command: list[str] = setting(
        help="program and arguments; the part id is appended as one argument"
    )
    timeout_s: float = setting(2.0, "a command running longer is killed and counted as failed")
    pulse_ms: float = setting(50.0, "passed to the command as INSPECTOR_PULSE_MS")
    min_spacing_ms: float = setting(100.0, "shortest time between two pulses")

    def problems(self):
        if not self.command:
            yield "command", "name the program to run"


@dataclass(frozen=True, kw_only=True)
class GpioActuatorConfig:
    type: Literal["gpio"] = "gpio"
    chip: str = setting("/dev/gpiochip0", "GPIO chip device")
    line: int = setting(help="line offset on the chip")
    active_low: bool = setting(False, "the output is active when low")
    pulse_ms: float = setting(50.0, "how long the reject output stays on")
    min_spacing_ms: float = setting(100.0, "shortest time between two pulses")


class Actuator:
    """Runs pulses on its own thread, at their scheduled time, keeping the minimum spacing."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._heap: list[tuple[float, int, str]] = []
        self._count = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self._last = -1e9
        self.fired: list[tuple[str, float]] = []  # (part id, monotonic time), for tests and logs
        self.delayed = 0
        self.merged = 0
        self.failed = 0
        self.held = False
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)

    def start(self) -> None:
        self.open()
        self._thread.start()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def schedule(self, part_id: str, at_monotonic: float) -> None:
        with self._cv:
            heapq.heappush(self._heap, (at_monotonic, next(self._count), part_id))
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def stop(self, drain_s: float = 2.0) -> None:
        end = time.monotonic() + drain_s
        while self.pending() and time.monotonic() < end:
            time.sleep(0.01)
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(drain_s + 1)
        self.close()

    def _run(self) -> None:
        spacing = self.cfg.min_spacing_ms / 1000.0
        pulse = self.cfg.pulse_ms / 1000.0
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait if wait is None else max(wait, 0.0))
                if self._stop:
                    return
                _, _, part_id = heapq.heappop(self._heap)
            gap = self._last + spacing - time.monotonic()
            if gap > 0:  # it came in after the last pulse ended: keep the actuator's spacing
                self.delayed += 1
                log.warning("reject for %r delayed %.0f ms (min_spacing_ms)", part_id, gap * 1000)
                time.sleep(gap)
            end = time.monotonic() + pulse
            self._activate(part_id)
            # parts due before the output could be released and re-armed share this pulse
            while True:
                now = time.monotonic()
                with self._cv:
                    nxt = self._heap[0] if self._heap else None
                    if nxt is not None and nxt[0] <= end + spacing:
                        if nxt[0] <= now:
                            heapq.heappop(self._heap)
                        else:  # keep the output on until it is due
                            self._cv.wait(nxt[0] - now)
                            continue
                    elif now < end:
                        self._cv.wait(end - now)  # a new part may come in meanwhile
                        continue
                    else:
                        break
                self.merged += 1
                self._activate(nxt[2])
                end = max(end, now + pulse)
            self._release()
            self._last = time.monotonic()

    def _activate(self, part_id: str) -> None:
        try:
            self.fire(part_id)
            self.fired.append((part_id, time.monotonic()))
        except Exception as exc:  # the actuator must keep running; the failure is loud
            self.failed += 1
            log.error("reject actuator failed for part %r: %s", part_id, exc)

    def _release(self) -> None:
        try:
            self.release()
        except Exception as exc:
            self.failed += 1
            log.error("reject actuator failed to release: %s", exc)

    def fire(self, part_id: str) -> None:
        """Switch the reject output on for this part (it may already be on)."""
        raise NotImplementedError

    def release(self) -> None:
        """Switch the reject output off at the end of a pulse (unless held)."""

    def hold(self, on: bool) -> None:
        """Keep the reject output on (the gate is blind) or release it."""
        self.held = on
        log.log(
            logging.ERROR if on else logging.WARNING,
            "reject output %s",
            "HELD ON" if on else "released",
        )


@register("log", LogActuatorConfig)
class LogActuator(Actuator):
    def fire(self, part_id: str) -> None:
        log.info("REJECT %r (pulse %.0f ms)", part_id, self.cfg.pulse_ms)


@register("command", CommandActuatorConfig)
class CommandActuator(Actuator):
    """Runs ``command + [part_id]`` without a shell, so no part id can inject anything."""

    def fire(self, part_id: str) -> None:
        env = {"INSPECTOR_PULSE_MS": str(self.cfg.pulse_ms), "PATH": "/usr/local/bin:/usr/bin:/bin"}
        r = subprocess.run(
            [*self.cfg.command, part_id],
            timeout=self.cfg.timeout_s,
            env=env,
            capture_output=True,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"{self.cfg.command[0]} exited {r.returncode}: "
                f"{r.stderr.decode(errors='replace').strip()[:200]}"
            )


@register("gpio", GpioActuatorConfig)
class GpioActuator(Actuator):
    """libgpiod 2 through the ``gpiod`` package (``pip install 'defect-inspector[gpio]'``)."""

    def open(self) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError:
            raise ConfigError(
                "actuator.type gpio needs the gpiod package: pip install 'defect-inspector[gpio]'"
            ) from None
        self._values = (Value.ACTIVE, Value.INACTIVE)
        try:
            self._request = gpiod.request_lines(
                self.cfg.chip,
                consumer="inspector-gate",
                config={
                    self.cfg.line: gpiod.LineSettings(
                        direction=Direction.OUTPUT,
                        active_low=self.cfg.active_low,
                        output_value=Value.INACTIVE,
                    )
                },
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"actuator: cannot open GPIO line {self.cfg.line} on {self.cfg.chip}: {exc}"
            ) from None
        self._line_lock = threading.Lock()  # pulses (actuator thread) and hold (the gate)
        self._pulse_on = False

    def fire(self, part_id: str) -> None:
        with self._line_lock:
            self._pulse_on = True
            self._request.set_value(self.cfg.line, self._values[0])

    def release(self) -> None:
        with self._line_lock:
            self._pulse_on = False
            if not self.held:
                self._request.set_value(self.cfg.line, self._values[1])

    def hold(self, on: bool) -> None:
        """Held on at once; released only between pulses, so no part's pulse is cut short."""
        with self._line_lock:
            super().hold(on)
            if on or not self._pulse_on:
                self._request.set_value(self.cfg.line, self._values[0 if on else 1])

    def close(self) -> None:
        req = getattr(self, "_request", None)
        if req is not None:
            req.release()


def make_actuator(cfg) -> Actuator:
    return ACTUATORS.make(cfg)
