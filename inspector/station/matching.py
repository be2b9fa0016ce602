"""Which frame is which part's image: triggered parts waiting for their frame.

A part's frame is the first frame captured after its trigger: after the trigger message
arrived (``trigger.match_by: receipt``) or after the trigger's own ``ts``
(``timestamp``; then frames that came before their trigger message are kept for a
second so a slow message still finds its frame). A part whose frame has not come
``max_frame_wait_ms`` after its trigger is handed back as missed rather than being
given a later part's image.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from ..contract.records import Frame, Part
from .config import TriggerSection

RECENT_S = 1.0  # unclaimed frames kept this long for triggers that arrive after their frame


class FrameMatcher:
    def __init__(self, cfg: TriggerSection, alive: Callable[[Part], bool]) -> None:
        self.cfg = cfg
        self.alive = alive  # False once a part has its verdict (timed out while waiting)
        self.match_ts = cfg.match_by == "timestamp"
        self._pending: collections.deque[Part] = collections.deque()
        self._recent: collections.deque[Frame] = collections.deque(maxlen=64)
        self._lock = threading.Lock()

    def since_trigger(self, frame: Frame, part: Part) -> float:
        """Seconds from the part's trigger to the frame, on the clock ``match_by`` names."""
        if self.match_ts:
            return frame.t_capture - part.t_trigger
        return frame.t_capture_mono - part.t_trigger_mono

    def add(self, part: Part, has_ts: bool) -> tuple[Frame | None, bool]:
        """Queue a triggered part. Returns (its frame if it came already, overflow)."""
        with self._lock:
            if self.match_ts and has_ts and not self._pending:
                while self._recent:
                    f = self._recent.popleft()
                    if f.t_capture >= part.t_trigger:
                        return f, False
            if len(self._pending) >= self.cfg.max_pending:
                return None, True
            self._pending.append(part)
            return None, False

    def take(self, frame: Frame) -> tuple[Part | None, list[Part]]:
        """The part this frame belongs to (or None), and parts whose frame never came."""
        max_wait = self.cfg.max_frame_wait_ms
        missed: list[Part] = []
        with self._lock:
            while self._pending:
                part = self._pending[0]
                if not self.alive(part):
                    self._pending.popleft()
                    continue
                if self.since_trigger(frame, part) < 0:
                    break  # this frame was taken before the part was there
                self._pending.popleft()
                if max_wait is not None and self.since_trigger(frame, part) * 1000 > max_wait:
                    missed.append(part)  # its own frame never came; this one is a later part's
                    continue
                return part, missed
            if self.match_ts:  # its trigger message may still be on its way
                self._recent.append(frame)
                while self._recent and frame.t_capture - self._recent[0].t_capture > RECENT_S:
                    self._recent.popleft()
        return None, missed

    def drain(self) -> list[Part]:
        """Every part still waiting for a frame (the source is lost, or the station stops)."""
        with self._lock:
            pending, self._pending = list(self._pending), collections.deque()
        return pending
