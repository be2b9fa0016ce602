"""The anomaly method on the training verbs: ``train --method anomaly``, ``export`` and
``evaluate`` of anomaly runs and models, and ``bench anomaly``.

``extend(sub, bench)`` adds ``--method classify|anomaly`` to ``inspector train`` and
routes anomaly runs and models to ``training.anomaly`` / ``anomalyexport`` /
``anomalyeval``; everything else goes to the classifier's verbs unchanged. The method can
also come from the training config: ``method: anomaly`` at the top, with this method's
settings under ``anomaly:`` (``inspector train --method anomaly --schema`` lists them).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from inspector.contract import schema
from inspector.errors import ConfigError

from . import TrainingError
from .config import ModelConfig, TrainConfig

METHODS = ("classify", "anomaly")


def extend(sub, bench) -> None:
    """Hook the anomaly method into the parsers that ``training.cli.add_parsers`` made."""
    train, export, evaluate = (sub.choices.get(v) for v in ("train", "export", "evaluate"))
    if train is not None:
        train.add_argument(
            "--method",
            choices=METHODS,
            help="classify (default): a classifier from labelled images; anomaly: a model of "
            "good parts only (memory bank of pretrained patch features) that flags the rest",
        )
        train.set_defaults(func=_routed(train.get_default("func"), _train))
    if export is not None:
        export.set_defaults(func=_routed(export.get_default("func"), _export))
    if evaluate is not None:
        evaluate.set_defaults(func=_routed(evaluate.get_default("func"), _evaluate))
    g = bench.add_argument_group("bench anomaly")
    g.add_argument(
        "--elpv-limit",
        type=int,
        default=0,
        help="bench anomaly: a stratified ELPV subset of N cells (0: the whole Deitsch split)",
    )
    g.add_argument("--skip-elpv", action="store_true", help="bench anomaly: generated set only")


def _routed(classify, anomaly):
    def run(args) -> int:
        out = anomaly(args)
        return classify(args) if out is None else out

    return run


class _Config:
    """A training YAML split into ``method``, the ``anomaly:`` section and the rest, each
    checked against its schema with the file's own line numbers in the errors."""

    def __init__(self, path: Path | None):
        self.path, self.method, self.section, self.rest = path, None, None, None
        if path is None:
            return
        node = schema._compose(Path(path))
        if not isinstance(node, yaml.MappingNode):
            raise TrainingError(f"{path}: a training config is a mapping")
        rest = []
        for key, value in node.value:
            if key.value == "method":
                self.method = value.value
            elif key.value == "anomaly":
                self.section = value
            else:
                rest.append((key, value))
        if self.method is not None and self.method not in METHODS:
            raise TrainingError(
                f"{path}:{node.start_mark.line + 1}: method: {self.method!r} is not one of "
                f"{', '.join(METHODS)}"
            )
        self.rest = yaml.MappingNode(node.tag, rest, node.start_mark, node.end_mark)

    def load(self, cls, node):
        path = Path(self.path)
        walker = schema._Walker(str(path), path.resolve().parent)
        obj = walker.convert(cls, node, "")
        if walker.errors:
            raise ConfigError(*walker.errors)
        return obj


def _train(args):
    config = args.config or args.config_file
    parts = _Config(config)
    method = args.method or parts.method or "classify"
    if method == "classify":
        if parts.section is not None:
            raise TrainingError(f"{config}: an 'anomaly:' section needs method: anomaly")
        return None
    logging.getLogger("training").setLevel(logging.INFO)
    from inspector.contract.schema import describe_schema

    from .anomaly import AnomalyConfig, fit
    from .cli import _typed, apply_flags, set_items
    from .config import override, validate

    if args.schema:
        print("\n".join(describe_schema(TrainConfig)))
        print("method: anomaly | classify")
        print("\n".join(describe_schema(AnomalyConfig, "anomaly.")))
        return 0
    cfg = parts.load(TrainConfig, parts.rest) if parts.rest is not None else TrainConfig()
    acfg = parts.load(AnomalyConfig, parts.section) if parts.section else AnomalyConfig()
    if args.model is None and cfg.model.type == "cnn":  # the classifier's default
        cfg = override(cfg, "model.type", "efficientnet-lite0")
    if args.image_size is None and cfg.model.image_size == ModelConfig().image_size:
        cfg = override(cfg, "model.image_size", 224)  # the backbone's ImageNet size
    flags = {
        "data": args.data,
        "model.type": args.model,
        "model.image_size": args.image_size,
        "name": args.name,
        "geometry": args.geometry,
    }
    cfg = apply_flags(cfg, flags)
    for key, text in set_items(args.set):
        if key.startswith("anomaly."):
            acfg = override(acfg, key[len("anomaly.") :], _typed(acfg, key[8:], text))
        else:
            cfg = override(cfg, key, _typed(cfg, key, text))
    cfg = override(cfg, "method", "anomaly")
    validate(cfg)
    validate(acfg)
    out = args.out or Path("runs") / (cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    run = fit(cfg, acfg, out)
    a, t, tr = run["anomaly"], run["threshold"], run["training"]
    m = t["metrics"]
    print(
        f"fitted an anomaly model on {tr['good_images']} good images in {tr['fit_seconds']:.0f} "
        f"s: {a['bank_size']:,} of {a['training_patches']:,} patches in the bank "
        f"({a['bank_bytes'] / 2**20:.1f} MB, {a['feature_dims']} features, grid "
        f"{a['grid'][0]}x{a['grid'][1]})"
    )
    recall = m["defect_recall"]
    print(
        f"threshold: distance {t['raw']:.4g} ({t['policy']} {t['target']}) -> score 0.5; on "
        f"validation: false reject rate {m['false_reject_rate']:.3f}"
        + ("" if recall is None else f", defect recall {recall:.3f}")
    )
    print(f"run folder: {out}\nnext: inspector export {out} --out {out}/model.onnx")
    return 0


def _export(args):
    from .anomaly import is_anomaly_run

    if not is_anomaly_run(args.run):
        return None
    logging.getLogger("training").setLevel(logging.INFO)
    from .anomalyexport import describe, export
    from .export import next_steps

    if args.fp16 or args.int8:
        raise TrainingError("--fp16/--int8: not offered for anomaly models yet")
    out = args.out or Path(args.run) / "model.onnx"
    m = export(args.run, out, tolerance=args.tolerance)
    print(f"wrote {out} and {out.with_suffix('.json')} (ONNX opset {m['onnx']['opset']})")
    print(describe(m))
    print("next:")
    for line in next_steps(out):
        print(f"  {line}")
    return 0


def _evaluate(args):
    from .anomalyeval import evaluate_anomaly, is_anomaly_model

    if not is_anomaly_model(args.model):
        return None
    data = args.data or getattr(args, "data_pos", None)
    if data is None:
        raise TrainingError("give the images to evaluate: --data DIR")
    m = evaluate_anomaly(args.model, data, args.out, args.split, args.run, args.threshold)

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    op = m["operating_point"]
    print(
        f"{m['images']} images ({m['good']} good, {m['defective']} defective): image AUROC "
        f"{f(m['image_auroc'])}, pixel AUROC {f(m['pixel_auroc'])}; at the threshold: "
        f"escape rate {f(op['escape_rate'])}, false reject rate {f(op['false_reject_rate'])}"
    )
    print(f"wrote {args.out}/metrics.json, predictions.csv and gallery/index.html")
    return 0
