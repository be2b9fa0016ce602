"""Parts waiting for their verdict, and their deadlines.

The station registers every part here; whoever gives a part its verdict first takes it
out (``take``), so a part is decided exactly once; the watchdog asks which parts are due.
Thread-safe: capture, classifier workers, MQTT and the watchdog all use it.
"""

from __future__ import annotations

import heapq
import threading

from ..contract.records import Part

HEAP_SLACK = 1024  # deadline entries of decided parts kept before the heap is rebuilt


class InFlight:
    def __init__(self) -> None:
        self._parts: dict[int, Part] = {}
        self._deadlines: list[tuple[float, int]] = []  # (deadline_mono, seq), a heap
        self._lock = threading.Lock()

    def add(self, part: Part) -> None:
        with self._lock:
            self._parts[part.seq] = part
            heapq.heappush(self._deadlines, (part.deadline_mono, part.seq))
            if len(self._deadlines) > 4 * len(self._parts) + HEAP_SLACK:
                # parts decided long before their deadline leave entries behind until it
                # passes (rate x deadline of them); drop them now and then
                self._deadlines = [(p.deadline_mono, s) for s, p in self._parts.items()]
                heapq.heapify(self._deadlines)

    def take(self, part: Part) -> bool:
        """Remove ``part``; False when it was already taken (it has its verdict)."""
        with self._lock:
            return self._parts.pop(part.seq, None) is not None

    def __contains__(self, part: Part) -> bool:
        return part.seq in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def live(self, parts: list[Part]) -> list[Part]:
        """Those of ``parts`` still waiting for a verdict."""
        with self._lock:
            return [p for p in parts if p.seq in self._parts]

    def snapshot(self) -> list[Part]:
        with self._lock:
            return list(self._parts.values())

    def due(self, now: float, margin: float) -> tuple[list[Part], float]:
        """Parts whose deadline is within ``margin`` of ``now`` (monotonic seconds), and the
        seconds until the next one is (0.05 when none is waiting)."""
        due: list[Part] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] - margin <= now:
                _, seq = heapq.heappop(self._deadlines)
                part = self._parts.get(seq)
                if part is not None:
                    due.append(part)
            wait = self._deadlines[0][0] - margin - now if self._deadlines else 0.05
        return due, wait

    def deadline_entries(self) -> int:
        with self._lock:
            return len(self._deadlines)
