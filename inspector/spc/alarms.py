"""Alarms: opened and cleared by the monitor, kept in the store, published retained on
``PREFIX/spc/alarm``.

The retained message is the whole set of active alarms (``{"schema": 1, "active": [...],
"ts": ..., "store": "ok"}``), so a client that connects at any time sees what is wrong now,
and an empty ``active`` list says the process is back in control; ``store`` says why the
service cannot write its store while that lasts (it holds the messages and retries). Each
alarm names its rule and chart, since when, the subgroups involved and the context changes
just before it began (what changed when the rate moved).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .messages import short
from .monitor import Alarm, Transition
from .store import Store

log = logging.getLogger(__name__)
UNKEPT_MAX = 10_000  # alarm history entries waiting for the store, at most (the oldest go)


def context_changes(rows: list[tuple[str, float, str]], t_from: float) -> list[dict]:
    """The changes in ``rows`` (topic, ts, value; each topic's last value before ``t_from``
    first) at or after ``t_from``: a value that differs from the topic's previous one."""
    last: dict[str, str] = {}
    out = []
    for topic, ts, value in rows:
        before = last.get(topic)
        if ts >= t_from and value != before:
            out.append({"topic": topic, "ts": ts, "from": before, "to": value})
        last[topic] = value
    return out


class AlarmBoard:
    """The active alarms; ``publish(payload_bytes)`` sends the retained message."""

    def __init__(
        self, store: Store, publish: Callable[[bytes], None], context_window_s: float = 3600.0
    ) -> None:
        self.store, self.publish_fn = store, publish
        self.window = context_window_s
        self._lock = threading.Lock()
        self.active: dict[tuple[str, str, str], Alarm] = {}
        self.opened = 0
        self.cleared = 0
        self.store_error: str | None = None  # the store takes no writes now (why)
        self._unkept: deque[tuple] = deque(maxlen=UNKEPT_MAX)  # history the store could not take
        self._keep_lock = threading.Lock()

    def on_transition(self, t: Transition) -> None:
        a = t.alarm
        key = (a.station, a.chart, a.rule)
        if t.cleared is None:
            t_from = a.since - self.window
            try:
                a.context = context_changes(
                    self.store.context(t_from, a.subgroups[-1]["t_end"]), t_from
                )
            except Exception as exc:  # noqa: BLE001 (the alarm matters more than its context)
                log.warning("alarm without its context: cannot read the store (%s)", exc)
            with self._lock:
                self.active[key] = a
                self.opened += 1
            self._keep(
                self.store.open_alarm, a.station, a.chart, a.rule, a.since, json.dumps(a.to_json())
            )
            log.warning(
                "SPC alarm: station %s, chart %s, rule %s since %s (%d context changes before)",
                a.station,
                a.chart,
                a.rule,
                time.strftime("%H:%M:%S", time.localtime(a.since)),
                len(a.context),
            )
        else:
            with self._lock:
                self.active.pop(key, None)
                self.cleared += 1
            self._keep(self.store.clear_alarm, a.station, a.chart, a.rule, a.since, t.cleared)
            log.info("SPC alarm cleared: station %s, chart %s, rule %s", *key)
        self.publish()

    def _keep(self, write, *args) -> None:
        """The alarm history in the store; while the store cannot be written the entries wait
        (``UNKEPT_MAX`` at most, in order) and are written with the next one or by
        ``keep_waiting``; the alarm itself is published at once."""
        with self._lock:
            self._unkept.append((write, args))
        self.keep_waiting()

    def keep_waiting(self) -> None:
        """Write the alarm history entries the store could not take before, oldest first."""
        with self._keep_lock:
            while self._unkept:
                write, args = self._unkept[0]
                try:
                    write(*args)
                except Exception as exc:  # noqa: BLE001
                    log.error(
                        "alarm history not kept in the store yet (%s): %s; %d entries wait",
                        short(exc),
                        args[:3],
                        len(self._unkept),
                    )
                    return
                self._unkept.popleft()

    def payload(self) -> bytes:
        with self._lock:
            active = [a.to_json() for a in self.active.values()]
        store = "ok" if self.store_error is None else f"cannot write: {self.store_error}"
        return json.dumps(
            {"schema": 1, "active": active, "ts": time.time(), "store": store}
        ).encode()

    def publish(self) -> None:
        self.publish_fn(self.payload())
