"""``inspector check CONFIG``: which kind of config it is, and everything that can be
validated without running it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .errors import InspectorError

log = logging.getLogger("inspector")


def _cmd_check(args) -> int:
    from .contract.schema import describe_schema
    from .station.config import StationConfig

    if args.schema:
        print("\n".join(describe_schema(StationConfig)))
        return 0
    if not args.config:
        print("inspector check: give a CONFIG file (or --schema)", file=sys.stderr)
        return 2
    try:
        kind = _config_kind(args.config)
    except InspectorError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return exc.exit_code
    problems, notes = _CHECKS[kind](args.config)
    for line in notes:
        print(f"ok: {line}")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: valid {kind} config")
    return 0


def _config_kinds() -> dict[str, type]:
    from .gate.config import GateConfig
    from .review.config import ReviewConfig
    from .spc.config import SpcConfig
    from .station.config import StationConfig

    kinds = {"station": StationConfig, "gate": GateConfig, "review": ReviewConfig, "spc": SpcConfig}
    try:  # QA's configs; a line PC installed without training/ has none
        from training.common.config import TrainConfig
    except ImportError:
        return kinds
    return {**kinds, "training": TrainConfig}


def _config_kind(path: Path) -> str:
    """station, gate or training, from the file's top-level keys: a gate config has ``gate:``;
    otherwise the kind that alone has one of the keys (``source:``, ``train:`` ...), or that
    alone has them all (``model:`` and ``mqtt:``: a station)."""
    import dataclasses

    from .contract.schema import top_level_keys
    from .errors import ConfigError

    keys = top_level_keys(path)
    kinds = {k: {f.name for f in dataclasses.fields(c)} for k, c in _config_kinds().items()}
    if keys is not None:
        if "gate" in keys:
            return "gate"
        own = {
            kind: set(keys) & (names - set().union(*(n for k, n in kinds.items() if k != kind)))
            for kind, names in kinds.items()
        }
        has_own = [kind for kind, found in own.items() if found]
        fits = [kind for kind, names in kinds.items() if set(keys) <= names]
        for candidates in (has_own, fits):
            if len(candidates) == 1:
                return candidates[0]
    what = "not a station, gate, training, review or SPC config"
    if keys is not None and len(fits) > 1:
        what = f"cannot tell which kind of config this is ({' or '.join(fits)})"
    hint = "" if "training" in kinds else " (training/ is not installed here)"
    raise ConfigError(
        f"{path}: {what}{hint}: a station config has source: and model:, a gate config "
        "gate:, a training config train:, a review config dataset:, an SPC config charts:"
    )


def _check_gate(path: Path) -> tuple[list[str], list[str]]:
    from .gate.config import load_gate_config

    try:
        cfg = load_gate_config(path)
    except InspectorError as exc:
        return exc.problems, []
    tls = cfg.mqtt.tls
    problems = [
        f"mqtt.tls.{key}: file not found: {getattr(tls, key)}"
        for key in ("ca", "cert", "key")
        if tls is not None and getattr(tls, key) is not None and not getattr(tls, key).is_file()
    ]
    g = cfg.gate
    return problems, [f"gate {g.id}: parts of {g.station_prefix}, {g.travel_ms:g} ms to the gate"]


def _check_training(path: Path) -> tuple[list[str], list[str]]:
    from training.common.config import load_train_config, validate

    try:
        validate(load_train_config(path))
    except InspectorError as exc:
        return exc.problems, []
    return [], []


def _check_station(path: Path) -> tuple[list[str], list[str]]:
    from .station.check import check_station

    return check_station(path)


def _check_loads(loader):
    def check(path: Path) -> tuple[list[str], list[str]]:
        try:
            loader(path)
        except InspectorError as exc:
            return exc.problems, []
        return [], []

    return check


def _load_review(path: Path):
    from .review.config import load_review_config

    return load_review_config(path)


def _load_spc(path: Path):
    from .spc.config import load_spc_config

    return load_spc_config(path)


_CHECKS = {
    "station": _check_station,
    "gate": _check_gate,
    "training": _check_training,
    "review": _check_loads(_load_review),
    "spc": _check_loads(_load_spc),
}


def add_parsers(sub) -> None:
    """Add this group's verbs to the ``inspector`` parser."""
    c = sub.add_parser(
        "check",
        help="validate a station config (with its model and source), a gate or a training config",
    )
    c.add_argument("config", nargs="?", type=Path)
    c.add_argument("--schema", action="store_true", help="list every setting with its default")
    c.set_defaults(func=_cmd_check)
