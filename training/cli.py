"""The training verbs of the ``inspector`` command line.

``inspector.cli`` registers them with ``add_parsers`` and imports this module only when
the command line is built; TensorFlow is imported only when a verb that needs it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import TrainingError

GEOMETRY_HELP = (
    "apply this station's preprocess geometry and source.bit_depth to every image "
    "(default: what the recordings' sidecars say)"
)


def _verbose() -> None:
    logging.getLogger("training").setLevel(logging.INFO)


def cmd_dataset(args) -> int:
    _verbose()
    if args.action == "import-elpv":
        from .elpv import import_elpv

        r = import_elpv(args.dest, limit=args.limit)
        print(
            f"wrote {r['images']} ELPV images to {r['dest']} "
            f"({r['counts']['good']} good, {r['counts']['defect']} defect) "
            f"and {r['dest']}/manifest.csv"
        )
        return 0
    from inspector.contract.preprocess import PreprocessSpec

    from .datasets import prepare

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
    _verbose()
    if args.schema:
        from inspector.contract.schema import describe_schema

        from .config import TrainConfig

        print("\n".join(describe_schema(TrainConfig)))
        return 0
    from .config import load_train_config, override, validate
    from .train import train

    config = args.config or args.config_file
    cfg = load_train_config(config)
    flags = {
        "data": args.data,
        "model.type": args.model,
        "model.image_size": args.image_size,
        "train.epochs": args.epochs,
        "train.seed": args.seed,
        "name": args.name,
        "geometry": args.geometry,
    }
    cfg = apply_flags(cfg, flags)
    for key, text in set_items(args.set):
        cfg = override(cfg, key, _typed(cfg, key, text))
    validate(cfg)
    out = args.out or Path("runs") / (cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    run = train(cfg, out, resume=args.resume)
    t = run["threshold"]
    m = t["metrics"]
    print(
        f"trained {run['training']['model']} ({run['training']['parameters']:,} parameters) "
        f"in {run['training']['fit_seconds']:.0f} s, {run['training']['epochs_run']} epochs "
        f"(best {run['training']['best_epoch']})"
    )
    print(
        f"threshold {t['value']:.4f} ({t['policy']}) on validation: accuracy "
        f"{m['accuracy']:.3f}, defect recall {m['defect_recall']:.3f}, "
        f"false reject rate {m['false_reject_rate']:.3f}"
    )
    gate = run.get("quality_gate") or {"passed": True}
    if not gate["passed"]:
        print(f"run folder: {out}")
        print(
            "WARNING: this model learned too little to reach a line: "
            + "; ".join(gate["problems"])
            + ".\n  export will refuse it (--force overrides and records that in the manifest); "
            "more or cleaner data, more epochs or a pretrained --model usually help",
            file=sys.stderr,
        )
        return 0
    print(f"run folder: {out}\nnext: inspector export {out} --out {out}/model.onnx")
    return 0


def apply_flags(cfg, flags: dict):
    """The command line's flags over the config, those given only."""
    from .config import override

    for key, value in flags.items():
        if value is not None:
            cfg = override(cfg, key, value)
    return cfg


def set_items(items) -> list[tuple[str, str]]:
    """``--set KEY=VALUE`` items as (key, text) pairs; a malformed one is a clear error."""
    out = []
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise TrainingError(f"--set {item!r}: expected KEY=VALUE")
        out.append((key.strip(), text))
    return out


def _typed(cfg, key: str, text: str):
    import yaml

    value = yaml.safe_load(text)
    obj = cfg
    for part in key.split(".")[:-1]:
        obj = getattr(obj, part, None)
    current = getattr(obj, key.split(".")[-1], None)
    if isinstance(current, Path) or (current is None and key == "data"):
        return Path(text)
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, float) and isinstance(value, str):  # YAML 1.1 reads 1e-9 as text
        try:
            return float(text)
        except ValueError:
            raise TrainingError(f"--set {key}: {text!r} is not a number") from None
    return value


def cmd_export(args) -> int:
    _verbose()
    from .export import export, next_steps

    out = args.out or Path(args.run) / "model.onnx"
    m = export(
        args.run,
        out,
        tolerance=args.tolerance,
        fp16=args.fp16,
        int8=args.int8,
        force=args.force,
        heatmap=args.heatmap,
    )
    if not m["quality_gate"]["passed"]:
        print(
            "WARNING: exported with --force although "
            + "; ".join(m["quality_gate"]["problems"])
            + " (recorded in the manifest)",
            file=sys.stderr,
        )
    p = m["parity"]
    print(
        f"wrote {out} and {out.with_suffix('.json')} (ONNX opset {m['onnx']['opset']}); "
        f"parity Keras vs ONNX Runtime on {p['images']} validation images: "
        f"max |diff| {p['max_abs_diff']:.2e}, {p['flips']} decision flips"
        + (f"; class map max rel diff {p['map_max_rel_diff']:.2e}" if "outputs" in m else "")
    )
    for tag, v in m.get("variants", {}).items():
        print(
            f"variant {tag}: {v['file']} ({v['bytes'] / 1e6:.2f} MB), max |diff| "
            f"{v['max_abs_diff']:.2e}, {v['flips']} flips, accuracy change "
            f"{v['accuracy_change']:+.4f}"
        )
    print("next:")
    for line in next_steps(out):
        print(f"  {line}")
    return 0


def cmd_evaluate(args) -> int:
    _verbose()
    from .evaluate import evaluate

    m = evaluate(
        args.model,
        args.data,
        args.out,
        args.split,
        args.run,
        args.threshold,
        geometry=args.geometry,
    )

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(
        f"{m['images']} images: accuracy {f(m['accuracy'])}, balanced accuracy "
        f"{f(m['balanced_accuracy'])}, F1 {f(m['f1'])}, AUROC {f(m['auroc'])}, "
        f"escape rate {f(m['escape_rate'])}, false reject rate {f(m['false_reject_rate'])}"
    )
    print(f"wrote {args.out}/metrics.json and {args.out}/report.html")
    return 0


def cmd_bench_accuracy(args) -> int:
    _verbose()
    from .elpv import bench_accuracy

    r = bench_accuracy(
        args.out,
        args.work,
        epochs=args.epochs,
        image_size=args.image_size,
        max_minutes=args.max_minutes,
        model=args.model_type,
        reuse=args.reuse,
    )
    print(
        f"ELPV test ({sum(r['split_counts']['test'].values())} images): accuracy "
        f"{r['accuracy']:.4f}, AUROC {r['auroc']:.4f}, F1 {r['f1']:.4f}; model "
        f"{r['model_bytes'] / 1e6:.2f} MB, {r['cpu_fps_batch1']:.0f} frames/s at batch 1 "
        f"(CPU); trained in {r['train_seconds'] / 60:.1f} min"
    )
    print(f"wrote {args.out}")
    return 0


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
    t.add_argument("--schema", action="store_true", help="list every setting and exit")
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
    v.set_defaults(func=_evaluate_args)


def _evaluate_args(args) -> int:
    args.data = args.data or args.data_pos
    if args.data is None:
        raise TrainingError("give the images to evaluate: --data DIR")
    return cmd_evaluate(args)


def model_types() -> list[str]:
    """The architectures ``model.type`` accepts (one list: the config's)."""
    import typing

    from .config import ModelConfig

    return list(typing.get_args(typing.get_type_hints(ModelConfig)["type"]))


def add_bench_accuracy_args(b: argparse.ArgumentParser) -> None:
    g = b.add_argument_group("bench accuracy (ELPV)")
    g.add_argument("--work", type=Path, default=Path("bench-accuracy"))
    g.add_argument("--epochs", type=int, help="default: 24 (pretrained), 90 (cnn)")
    g.add_argument("--image-size", type=int, help="default: 224 (pretrained), 160 (cnn)")
    g.add_argument("--max-minutes", type=float, help="default: 50 (pretrained), 28 (cnn)")
    g.add_argument(
        "--model-type",
        default="efficientnet-lite0",
        help="architecture for bench accuracy (cnn: the earlier from-scratch recipe)",
    )
    g.add_argument(
        "--reuse",
        action="store_true",
        help="bench accuracy: export, test and time the run already in --work (no training)",
    )
