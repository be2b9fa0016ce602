"""Small figures the plant benches share: a process's CPU time, percentiles and medians."""

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
