"""What the plant benches share: the station they run, a process's CPU time, percentiles
and medians."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 3)


def median_at(runs: list[dict], *path: str) -> float:
    """The median over ``runs`` of the figure at ``path`` (keys into each run's dict)."""
    values = []
    for r in runs:
        for key in path:
            r = r[key]
        values.append(r)
    return round(statistics.median(values), 3)


def station_yaml(model: Path, parts: Path, port: int, rate: float, plant: str = "") -> str:
    """The bench's station: the model on a looping folder in free-run at ``rate`` frames/s,
    verdicts to the broker on ``port``, nothing recorded; ``plant``: its plant section."""
    return f"""\
station: {{id: bench}}
source: {{type: folder, path: "{parts}", recursive: true, rate_fps: {rate}, loop: true}}
trigger: {{type: free-run}}
part: {{deadline_ms: 5000}}
pipeline: {{queue_size: 64, when_full: wait}}
model: {{path: "{model}", max_batch: 8, warmup_runs: 5}}
mqtt: {{host: 127.0.0.1, port: {port}, outbox_size: 100000}}
recorder: {{enabled: false}}
metrics: {{enabled: false}}
logging: {{level: WARNING}}
{plant}"""
