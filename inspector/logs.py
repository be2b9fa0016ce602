"""Logging set-up for the CLI: readable text, or one JSON object per line for the journal."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal

from .contract.schema import setting


@dataclass(frozen=True, kw_only=True)
class LoggingSection:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("INFO", "log level")
    format: Literal["text", "json"] = setting("text", "json: one JSON object per line")


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after set-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = _Stderr(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"
        )
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Throttled:
    """Log the first event of each kind at once, then at most one summary per ``period``.

    Under overload (a queue overflowing at thousands of parts a second) a warning per part
    would cost more CPU than the parts themselves and flood the journal; the counts stay
    exact in the metrics, and the log keeps one line per kind and period::

        part 'a-17' failed safe: overflow (classifier queue full)
        ... 4,211 more parts failed safe with reason overflow in the last 5 s (last: 'a-4228')
    """

    def __init__(self, logger: logging.Logger, period: float = 5.0) -> None:
        self.logger, self.period = logger, period
        self._lock = threading.Lock()
        self._state: dict[str, list] = {}  # kind -> [window start, suppressed count, last id]

    def warning(self, kind: str, part_id: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            st = self._state.get(kind)
            if st is None or now - st[0] >= self.period:
                suppressed = st[1] if st else 0
                last = st[2] if st else None
                self._state[kind] = [now, 0, part_id]
            else:
                st[1] += 1
                st[2] = part_id
                return
        if suppressed:
            self._summary(kind, suppressed, last)
        self.logger.warning(msg, *args)

    def flush(self) -> None:
        """Log the summaries of finished periods (call it now and then, e.g. every 50 ms)."""
        now = time.monotonic()
        pending = []
        with self._lock:
            for kind, st in list(self._state.items()):
                if now - st[0] >= self.period:
                    del self._state[kind]
                    if st[1]:
                        pending.append((kind, st[1], st[2]))
        for kind, n, last in pending:
            self._summary(kind, n, last)

    def _summary(self, kind: str, n: int, last: str | None) -> None:
        self.logger.warning(
            "... %d more parts failed safe with reason %s in the last %g s (last: %r)",
            n,
            kind,
            self.period,
            last,
        )


def redact_url(url: str) -> str:
    """A URL (a database's, a broker's) without its password, for messages and logs."""
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':')[0]}:***@{host}"
    return url
