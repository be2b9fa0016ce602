"""The classifier's side of the training verbs: ``inspector train``, ``export`` and
``evaluate`` for ``method: classify``, each printing what a QA engineer reads next.

``training.cli`` builds the parsers and hands a classifier's runs and models here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from inspector.contract.schema import describe_schema

from ..common import thresholdtext
from ..common.config import (
    TrainConfig,
    apply_flags,
    load_train_config,
    override,
    set_items,
    typed,
    validate,
)
from ..common.onnxexport import next_steps


def train(args, parts) -> int:
    """``inspector train`` for a classifier (``parts``: the config file, read by the caller)."""
    if args.schema:
        print("\n".join(describe_schema(TrainConfig)))
        return 0
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
        cfg = override(cfg, key, typed(cfg, key, text))
    validate(cfg)
    out = args.out or Path("runs") / (cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    from .train import train as train_run  # TensorFlow from here on

    run = train_run(cfg, out, resume=args.resume)
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
    for line in thresholdtext.summary_lines(t):
        print(line, file=sys.stderr if "WARNING" in line else sys.stdout)
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
        return 0  # trained, not exported (--export too): the warning above says why
    if getattr(args, "export", False):
        from .export import export as export_run

        m = export_run(out, out / "model.onnx")
        print(
            f"run folder: {out}\nexported {out}/model.onnx (parity max |diff| "
            f"{m['parity']['max_abs_diff']:.1e}"
            + (", with a heat map" if m.get("outputs", {}).get("class_map") else "")
            + ")"
        )
        return 0
    print(f"run folder: {out}\nnext: inspector export {out} --out {out}/model.onnx")
    return 0


def export(args) -> int:
    """``inspector export`` of a classifier's run folder."""
    from .export import export as export_run

    out = args.out or Path(args.run) / "model.onnx"
    m = export_run(
        args.run,
        out,
        tolerance=args.tolerance,
        fp16=args.fp16,
        int8=args.int8,
        force=args.force,
        heatmap=args.heatmap,
        tta=getattr(args, "tta", False),
        members=getattr(args, "members", None) or [],
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
    if "tta" in m:
        print(
            f"test-time flips: {m['tta']['transforms']} views per image; threshold "
            f"{m['thresholds'][m['defect_classes'][0]]['value']:.4f} chosen again on validation "
            f"(without: {m['tta']['threshold_without_tta']:.4f})"
        )
    if "ensemble" in m:
        print(
            f"ensemble of {len(m['ensemble']['members'])} runs; threshold "
            f"{m['thresholds'][m['defect_classes'][0]]['value']:.4f} chosen again on validation "
            f"(the first run's own: {m['ensemble']['threshold_of_first_run']:.4f})"
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


def evaluate(args) -> int:
    """``inspector evaluate`` of a classifier (an ONNX file or a run folder)."""
    from .evaluate import evaluate as evaluate_model

    m = evaluate_model(
        args.model,
        args.data,
        args.out,
        args.split,
        args.run,
        args.threshold,
        geometry=args.geometry,
        by=args.by,
    )

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(
        f"{m['images']} images: accuracy {f(m['accuracy'])}, balanced accuracy "
        f"{f(m['balanced_accuracy'])}, F1 {f(m['f1'])}, AUROC {f(m['auroc'])}, "
        f"escape rate {f(m['escape_rate'])}, false reject rate {f(m['false_reject_rate'])}"
    )
    for line in thresholdtext.evaluation_lines(m):
        print(line)
    r = m.get("regions")
    if r and "skipped" in r:
        print(f"regions: {r['images']} images with boxes, not compared: {r['skipped']}")
    elif r:
        print(
            f"regions: {r['images']} images with boxes drawn in review: heat-map pixel AUROC "
            f"{f(r['pixel_auroc'])}, map maximum inside a box in {100 * r['max_in_box']:.0f} %"
        )
    print(f"wrote {args.out}/metrics.json and {args.out}/report.html")
    return 0
