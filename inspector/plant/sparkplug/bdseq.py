"""The edge node's ``bdSeq`` kept across process restarts (Sparkplug B 3.0, 5.5 and 6.4.19: the
NDEATH's bdSeq is one more than the previous MQTT CONNECT's, 0-255), in a small file beside
the station's other state: ``$STATE_DIRECTORY`` under systemd (``StateDirectory=inspector``,
so ``/var/lib/inspector``), else ``~/.cache/inspector``; ``plant.sparkplug.state_file`` names
another.

    store = BdSeqStore(path)
    last = store.load()        # -1 when none was kept (the first CONNECT uses 0)
    store.save(7)              # after CONNECT went out with bdSeq 7

A file that cannot be read or written costs a warning, never the session: the node then
counts from 0 (or on from what it had) as it did without one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def default_path(group_id: str, edge_node_id: str) -> Path:
    """``STATE/sparkplug-GROUP-NODE.json``: one file per edge node on a PC that runs several."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    base = Path(state) if state else Path.home() / ".cache" / "inspector"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group_id}-{edge_node_id}")
    return base / f"sparkplug-{name}.json"


class BdSeqStore:
    """The last bdSeq this edge node sent in a CONNECT, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def load(self) -> int:
        """The bdSeq of the last CONNECT of an earlier process, or -1 (none kept)."""
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))["bdSeq"]
        except FileNotFoundError:
            return -1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sparkplug: %s unreadable (%s): bdSeq starts at 0", self.path, exc)
            return -1
        if not isinstance(value, int) or not 0 <= value <= 255:
            log.warning("sparkplug: %s holds bdSeq %r: starts at 0", self.path, value)
            return -1
        return value

    def save(self, bdseq: int) -> None:
        """Keep ``bdseq`` (atomically: a crash leaves the old value or the new one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".bdseq-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"bdSeq": bdseq}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING  # once, not per CONNECT
            log.log(level, "sparkplug: cannot keep bdSeq in %s: %s", self.path, exc)
            self._warned = True
