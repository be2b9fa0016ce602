"""The ``inspector spc`` verbs: run the service, write a report, run the benchmark."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path

from ..errors import InspectorError

log = logging.getLogger(__name__)


def parse_when(text: str | None, default: float) -> float:
    """Unix seconds, or an ISO date/time in local time (``2024-05-01``, ``2024-05-01T06:00``)."""
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InspectorError(
            f"{text!r}: not a time (give Unix seconds or an ISO date such as 2024-05-01T06:00)"
        ) from None


def run_service(config: Path, wait_for_stop) -> int:
    from .. import logs
    from .config import load_spc_config
    from .service import SpcService

    cfg = load_spc_config(config)
    logs.setup(cfg.logging.level, cfg.logging.format)
    svc = SpcService(cfg)
    stop = wait_for_stop()
    svc.start()
    log.info("SPC service: alarms on %s, store %s", cfg.alarm_topic, svc.store.dialect)
    try:
        stop.wait()
    finally:
        svc.stop()
    return 0


def run_report(
    config: Path | None, db: str | None, t_from: str | None, t_to: str | None, out: Path
) -> Path:
    from .config import ChartsSection, load_spc_config
    from .report import write_report

    charts_cfg = ChartsSection()
    if config is not None:
        cfg = load_spc_config(config)
        charts_cfg, db = cfg.charts, db or cfg.store.url
    if db is None:
        raise InspectorError("give --config spc.yaml or --db (a SQLite file or postgresql:// URL)")
    if "://" not in db and not Path(db).is_file():
        raise InspectorError(f"{db}: no such database")
    return write_report(
        db, out, parse_when(t_from, 0.0), parse_when(t_to, time.time() + 1), charts_cfg
    )


def run_bench(out: Path | None, verdicts: int, quick: bool) -> dict:
    from .bench import run_all

    result = run_all(verdicts=verdicts, quick=quick)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
