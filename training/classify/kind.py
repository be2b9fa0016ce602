"""The classifier as a model kind (``method: classify``, the default): see ``training.registry``."""

from __future__ import annotations

from ..common.kind import ModelKind


def _train(cfg, out, settings=None, **options) -> dict:
    from .train import train

    return train(cfg, out, **options)


def _export(run, out, **options) -> dict:
    from .export import export

    return export(run, out, **options)


def _evaluate(model, data, out, **options) -> dict:
    from .evaluate import evaluate

    return evaluate(model, data, out, **options)


def _cli_train(args, parts) -> int:
    from .cli import train

    return train(args, parts)


def _cli_export(args) -> int:
    from .cli import export

    return export(args)


def _cli_evaluate(args) -> int:
    from .cli import evaluate

    return evaluate(args)


KIND = ModelKind(
    name="classify",
    help="classify (default): a classifier from labelled images",
    train=_train,
    export=_export,
    evaluate=_evaluate,
    cli_train=_cli_train,
    cli_export=_cli_export,
    cli_evaluate=_cli_evaluate,
)
