"""The anomaly model as a model kind (``method: anomaly``): see ``training.registry``."""

from __future__ import annotations

from ..common.kind import ModelKind


def _train(cfg, out, settings=None, **options) -> dict:
    from .config import AnomalyConfig
    from .fit import fit

    return fit(cfg, settings if settings is not None else AnomalyConfig(), out)


def _export(run, out, **options) -> dict:
    from .export import export

    return export(run, out, **options)


def _evaluate(model, data, out, **options) -> dict:
    from .evaluate import evaluate_anomaly

    return evaluate_anomaly(model, data, out, **options)


def _cli_train(args, parts) -> int:
    from .cli import train

    return train(args, parts)


def _cli_export(args) -> int:
    from .cli import export

    return export(args)


def _cli_evaluate(args) -> int:
    from .cli import evaluate

    return evaluate(args)


def _settings() -> type:
    from .config import AnomalyConfig

    return AnomalyConfig


KIND = ModelKind(
    name="anomaly",
    help="anomaly: a model of good parts only (a memory bank of pretrained patch features, "
    "or Gaussians per image region) that flags the rest",
    train=_train,
    export=_export,
    evaluate=_evaluate,
    cli_train=_cli_train,
    cli_export=_cli_export,
    cli_evaluate=_cli_evaluate,
    settings=_settings,
)
