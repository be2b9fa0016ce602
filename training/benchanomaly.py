"""``inspector bench anomaly``: the figures of good-parts-only models (being written)."""

from . import TrainingError


def cmd_bench_anomaly(args) -> int:
    raise TrainingError("bench anomaly: not available yet")
