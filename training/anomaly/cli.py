"""The anomaly method's side of the training verbs: ``inspector train --method anomaly``,
``export`` and ``evaluate`` of anomaly runs and models, each printing what a QA engineer
reads next.

The method can also come from the training config: ``method: anomaly`` at the top, with
this method's settings under ``anomaly:`` (``inspector train --method anomaly --schema``
lists them). ``training.cli`` builds the parsers and hands anomaly runs and models here.
"""

from __future__ import annotations

import time
from pathlib import Path

from inspector.contract.schema import describe_schema

from .. import TrainingError
from ..common import thresholdtext
from ..common.config import (
    ModelConfig,
    TrainConfig,
    apply_flags,
    override,
    set_items,
    typed,
    validate,
)
from ..common.onnxexport import next_steps
from .config import METHOD, AnomalyConfig


def train(args, parts) -> int:
    """``inspector train --method anomaly``; ``parts``: the config file split by the caller
    (``training.cli.TrainingYaml``), this method's section under ``parts.sections``."""
    from .fit import fit

    if args.schema:
        print("\n".join(describe_schema(TrainConfig)))
        print("method: anomaly | classify")
        print("\n".join(describe_schema(AnomalyConfig, "anomaly.")))
        return 0
    cfg = parts.load(TrainConfig, parts.rest) if parts.rest is not None else TrainConfig()
    section = parts.sections.get(METHOD)
    acfg = parts.load(AnomalyConfig, section) if section is not None else AnomalyConfig()
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
            acfg = override(acfg, key[len("anomaly.") :], typed(acfg, key[8:], text))
        else:
            cfg = override(cfg, key, typed(cfg, key, text))
    cfg = override(cfg, "method", METHOD)
    validate(cfg)
    validate(acfg)
    out = args.out or Path("runs") / (cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    run = fit(cfg, acfg, out)
    a, t, tr = run["anomaly"], run["threshold"], run["training"]
    m = t["metrics"]
    from .export import normal_text

    print(
        f"fitted an anomaly model on {tr['good_images']} good images in {tr['fit_seconds']:.0f} "
        f"s: {normal_text(a)}, {a['bank_bytes'] / 2**20:.1f} MB, from "
        f"{a['training_patches']:,} patches on a {a['grid'][0]}x{a['grid'][1]} grid"
    )
    print(f"peak memory (RSS) {tr['memory']['peak_rss_bytes'] / 2**20:,.0f} MB")
    recall = m["defect_recall"]
    print(
        f"threshold: distance {t['raw']:.4g} ({t['policy']} {t['target']}) -> score 0.5; on "
        f"{m['on']}: false reject rate {m['false_reject_rate']:.3f}"
        + ("" if recall is None else f", defect recall {recall:.3f}")
    )
    held = t.get("held_out_good") or {}
    if held.get("folds"):
        print(
            f"held-out good images behind the bound: {held['validation_good']} validation + "
            f"{held['out_of_fold_good']} training images scored out-of-fold "
            f"({held['folds']} folds, {tr['out_of_fold_seconds']:.0f} s)"
        )
    for line in thresholdtext.summary_lines(t):
        print(line)
    print(f"run folder: {out}\nnext: inspector export {out} --out {out}/model.onnx")
    return 0


def export(args) -> int:
    """``inspector export`` of an anomaly run folder."""
    from .export import describe
    from .export import export as export_run

    if args.fp16 or args.int8:
        raise TrainingError("--fp16/--int8: not offered for anomaly models yet")
    if getattr(args, "tta", False):
        raise TrainingError("--tta: test-time flips are offered for classifiers only")
    if getattr(args, "members", None):
        raise TrainingError("--with: ensembles are offered for classifiers only")
    out = args.out or Path(args.run) / "model.onnx"
    m = export_run(args.run, out, tolerance=args.tolerance)
    print(f"wrote {out} and {out.with_suffix('.json')} (ONNX opset {m['onnx']['opset']})")
    print(describe(m))
    print("next:")
    for line in next_steps(out):
        print(f"  {line}")
    return 0


def evaluate(args) -> int:
    """``inspector evaluate`` of an anomaly model (an ONNX file or a run folder)."""
    from .evaluate import evaluate_anomaly

    data = args.data or getattr(args, "data_pos", None)
    if data is None:
        raise TrainingError("give the images to evaluate: --data DIR")
    m = evaluate_anomaly(
        args.model,
        data,
        args.out,
        args.split,
        args.run,
        args.threshold,
        by=args.by,
    )

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    op = m["operating_point"]
    print(
        f"{m['images']} images ({m['good']} good, {m['defective']} defective): image AUROC "
        f"{f(m['image_auroc'])}, pixel AUROC {f(m['pixel_auroc'])}; at the threshold: "
        f"escape rate {f(op['escape_rate'])}, false reject rate {f(op['false_reject_rate'])}"
    )
    for line in thresholdtext.group_lines(m):
        print(line)
    print(f"wrote {args.out}/metrics.json, predictions.csv and gallery/index.html")
    return 0
