"""The training verbs of the ``inspector`` command line: ``dataset``, ``train``, ``export``,
``evaluate`` and the training benches' arguments.

``inspector.cli`` registers them with ``add_parsers`` and ``extend`` and imports this module
only when the command line is built; TensorFlow is imported only when a verb that needs it
runs. Which model kind a config, run folder or model is comes from ``training.registry``;
that kind's ``cli_*`` function does the verb and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from inspector.contract import schema
from inspector.errors import ConfigError

from . import TrainingError, registry
from .bench.accuracy import add_args as add_bench_accuracy_args
from .bench.accuracy import cmd_bench_accuracy
from .bench.anomaly import add_args as add_bench_anomaly_args

__all__ = ["add_bench_accuracy_args", "add_parsers", "cmd_bench_accuracy", "extend"]

GEOMETRY_HELP = (
    "apply this station's preprocess geometry and source.bit_depth to every image "
    "(default: what the recordings' sidecars say)"
)


def _verbose() -> None:
    logging.getLogger("training").setLevel(logging.INFO)


def cmd_dataset(args) -> int:
    _verbose()
    if args.action == "import-elpv":
        from .data.elpv import import_elpv

        r = import_elpv(args.dest, limit=args.limit)
        print(
            f"wrote {r['images']} ELPV images to {r['dest']} "
            f"({r['counts']['good']} good, {r['counts']['defect']} defect) "
            f"and {r['dest']}/manifest.csv"
        )
        return 0
    from inspector.contract.preprocess import PreprocessSpec

    from .data.datasets import prepare

    spec = PreprocessSpec(size=(args.image_size, args.image_size), color=args.color)
    data = prepare(args.data, spec, args.defect_classes or [], args.val, args.test, args.seed)
    r = data.report
    print(f"{args.data}: classes {r['classes']} (defects: {r['defect_classes']})")
    for name, counts in r["counts"].items():
        print(f"  {name:5s} " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    for u in r["unreadable"]:
        print(f"  unreadable: {u['file']} ({u['why']})")
    for d in r["duplicates"][:20]:
        files = [v for k, v in d.items() if k in ("train", "val", "test")]
        print(f"  {d['kind']} duplicate (distance {d['distance']}): {' <-> '.join(files)}")
    for w in r["warnings"]:
        print(f"warning: {w}")
    if args.report:
        args.report.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.report}")
    return 0


def cmd_train(args) -> int:
    config = args.config or args.config_file
    parts = TrainingYaml(config)
    kind = registry.get(args.method or parts.method or registry.DEFAULT)
    for other in parts.sections:
        if other != kind.name:
            raise TrainingError(f"{config}: an '{other}:' section needs method: {other}")
    if getattr(args, "export", False) and kind.name != "classify":
        raise TrainingError(
            f"--export: train the {kind.name} model, then `inspector export RUN` (the flag "
            "exports classifier runs)"
        )
    _verbose()
    return kind.cli_train(args, parts)


def cmd_export(args) -> int:
    _verbose()
    return registry.of_run(args.run).cli_export(args)


def cmd_evaluate(args) -> int:
    _verbose()
    return registry.of_model(args.model).cli_evaluate(args)


class TrainingYaml:
    """A training YAML split into ``method``, the sections of the model kinds that have
    settings (``anomaly:`` ...) and the rest, each checked against its schema with the
    file's own line numbers in the errors."""

    def __init__(self, path: Path | None):
        self.path, self.method, self.rest = path, None, None
        self.sections: dict[str, yaml.Node] = {}
        if path is None:
            return
        node = schema._compose(Path(path))
        if not isinstance(node, yaml.MappingNode):
            raise TrainingError(f"{path}: a training config is a mapping")
        rest, line = [], node.start_mark.line + 1
        for key, value in node.value:
            if key.value == "method":
                self.method, line = value.value, key.start_mark.line + 1
            elif key.value in registry.KINDS and registry.KINDS[key.value].settings:
                self.sections[key.value] = value
            else:
                rest.append((key, value))
        if self.method is not None and self.method not in registry.KINDS:
            raise TrainingError(
                f"{path}:{line}: method: {self.method!r} is not one of {', '.join(registry.KINDS)}"
            )
        self.rest = yaml.MappingNode(node.tag, rest, node.start_mark, node.end_mark)

    def load(self, cls, node):
        path = Path(self.path)
        walker = schema._Walker(str(path), path.resolve().parent)
        obj = walker.convert(cls, node, "")
        if walker.errors:
            raise ConfigError(*walker.errors)
        return obj


def add_parsers(sub) -> None:
    d = sub.add_parser("dataset", help="import the ELPV dataset; check a dataset")
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = dsub.add_parser("import-elpv", help="write the elpv-dataset package as DEST/<class>/")
    e.add_argument("dest", type=Path)
    e.add_argument("--limit", type=int, default=0, help="a stratified subset of N images")
    c = dsub.add_parser("check", help="split and check a dataset without training")
    c.add_argument("data", type=Path)
    c.add_argument("--image-size", type=int, default=64)
    c.add_argument("--color", choices=["gray", "rgb", "bgr"], default="gray")
    c.add_argument("--defect-classes", nargs="*")
    c.add_argument("--val", type=float, default=0.15)
    c.add_argument("--test", type=float, default=0.15)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--report", type=Path, help="write the full report as JSON")
    d.set_defaults(func=cmd_dataset)

    t = sub.add_parser("train", help="train a model (TensorFlow) into a run folder")
    t.add_argument("config", type=Path, nargs="?", help="training config YAML")
    t.add_argument("--config", dest="config_file", type=Path, help="the same, as a flag")
    t.add_argument("--data", type=Path)
    t.add_argument("--out", type=Path, help="run folder (default runs/<name or time>)")
    t.add_argument("--model", choices=model_types())
    t.add_argument("--epochs", type=int)
    t.add_argument("--image-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--name")
    t.add_argument("--geometry", type=Path, metavar="STATION.yaml", help=GEOMETRY_HELP)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.patience=5")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument(
        "--export",
        action="store_true",
        help="then export the run to RUN/model.onnx as `inspector export RUN` does (a run that "
        "learned too little is not exported, and says so)",
    )
    t.add_argument("--schema", action="store_true", help="list every setting and exit")
    t.add_argument(
        "--method",
        choices=list(registry.KINDS),
        help="; ".join(k.help for k in registry.KINDS.values()),
    )
    t.set_defaults(func=cmd_train)

    x = sub.add_parser("export", help="run folder -> ONNX with its manifest, parity-checked")
    x.add_argument("run", type=Path)
    x.add_argument("--out", type=Path, help="default RUN/model.onnx")
    x.add_argument("--tolerance", type=float, default=1e-4, help="max |Keras - ONNX| score")
    x.add_argument("--fp16", action="store_true", help="also write MODEL.fp16.onnx")
    x.add_argument("--int8", action="store_true", help="also write MODEL.int8.onnx")
    x.add_argument(
        "--force",
        action="store_true",
        help="export a run that learned too little (validation AUROC < 0.7, or a threshold "
        "rejecting over half the good images); the manifest records it",
    )
    x.add_argument(
        "--heatmap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the class-activation map output class_map (the default where the head is "
        "global average pooling + Dense: it costs ~1.0x at batch 1); --heatmap refuses any "
        "other head, --no-heatmap leaves it out",
    )
    x.add_argument(
        "--tta",
        action="store_true",
        help="test-time flips in the graph: every image judged under the flips (and quarter "
        "turns) the run was trained with, probabilities averaged, the threshold chosen again "
        "on validation; costs up to 4x or 8x the network per image",
    )
    x.add_argument(
        "--with",
        dest="members",
        action="append",
        type=Path,
        metavar="RUN2",
        help="an ensemble: also this run (repeat for more; the same split and classes), the "
        "members' probabilities averaged in one graph and the threshold chosen again on "
        "validation; costs about one network per member",
    )
    x.set_defaults(func=cmd_export)

    v = sub.add_parser("evaluate", help="metrics and an HTML report for a model on a dataset")
    v.add_argument("model", type=Path, help="an ONNX file or a run folder")
    v.add_argument("data_pos", type=Path, nargs="?", metavar="DATA")
    v.add_argument("--data", type=Path)
    v.add_argument("--out", type=Path, default=Path("report"))
    v.add_argument("--split", choices=["train", "val", "test"], help="only this split")
    v.add_argument("--run", type=Path, help="the run folder whose split.json names the split")
    v.add_argument("--threshold", type=float, help="override the model's threshold")
    v.add_argument("--geometry", type=Path, metavar="STATION.yaml", help=GEOMETRY_HELP)
    v.add_argument(
        "--by",
        action="append",
        metavar="COLUMN",
        help="split the figures by this column of the CSV manifest (repeatable; default: every "
        "column with 2 to 12 values)",
    )
    v.set_defaults(func=_evaluate_args)


def _evaluate_args(args) -> int:
    args.data = args.data or args.data_pos
    if args.data is None:
        raise TrainingError("give the images to evaluate: --data DIR")
    return cmd_evaluate(args)


def model_types() -> list[str]:
    """The architectures ``model.type`` accepts (one list: the config's)."""
    import typing

    from .common.config import ModelConfig

    return list(typing.get_args(typing.get_type_hints(ModelConfig)["type"]))


def extend(sub, bench) -> None:
    """The benches' own arguments on ``inspector bench`` (the verbs are in ``add_parsers``)."""
    add_bench_anomaly_args(bench)
