"""``inspector bench small``: the case a QA engineer tries first on a new product.

Three classes (plain grey plates; a dark line; a bright dot), 60 images each at 96 px,
written by a seeded generator; ``inspector train --epochs 8 --image-size 96`` with the
default recipe and with the from-scratch ``cnn`` beside it, each exported and tested once
on its test split. The JSON says what each reached and how long it took.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from .measure import cpus

CLASSES = ("good", "line", "dot")


def write_three_classes(root: Path, per_class: int = 60, size: int = 96, seed: int = 7) -> None:
    """Grey plates of varying brightness and noise; a dark line (1-2 px, any angle) or a
    bright dot (radius 2-4 px) drawn anywhere on the plate for the defect classes."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((size, size), rng.integers(110, 150), np.float32)
            img += rng.normal(0, 6, (size, size))
            margin = size // 10
            x0, y0 = (int(v) for v in rng.integers(margin, size - margin, 2))
            if cls == "line":
                angle, length = rng.uniform(0, np.pi), int(rng.integers(size // 4, size * 5 // 8))
                end = (int(x0 + length * np.cos(angle)), int(y0 + length * np.sin(angle)))
                width = int(rng.integers(1, 3))
                cv2.line(img, (x0, y0), end, float(img.mean() - 50), width)
            elif cls == "dot":
                cv2.circle(img, (x0, y0), int(rng.integers(2, 5)), float(img.mean() + 60), -1)
            out = np.clip(img, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / cls / f"{cls}-{i:03d}.png"), out)


def bench_small(out: Path, work: Path, models=("efficientnet-lite0", "cnn")) -> dict:
    from ..common.config import TrainConfig, override, validate
    from ..common.runs import versions

    kind = registry.get("classify")

    work = Path(work)
    data = work / "three"
    shutil.rmtree(data, ignore_errors=True)
    write_three_classes(data)
    results = {}
    for model in models:
        cfg = TrainConfig(data=data, name=f"small-{model}")
        for key, value in {"model.type": model, "model.image_size": 96, "train.epochs": 8}.items():
            cfg = override(cfg, key, value)
        validate(cfg)
        run_dir = work / f"run-{model}"
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.monotonic()
        run = kind.train(cfg, run_dir, verbose=2)
        train_seconds = time.monotonic() - t0
        entry = {
            "train_seconds": round(train_seconds, 1),
            "epochs_run": run["training"]["epochs_run"],
            "validation": run["threshold"]["metrics"],
            "quality_gate": run["quality_gate"],
        }
        model_path = work / f"{model}.onnx"
        try:
            manifest = kind.export(run_dir, model_path)
        except Exception as exc:  # the guard refusing a run that learned nothing is a result
            entry["export"] = f"refused: {exc}"
        else:
            entry["export"] = "written"
            entry["parity"] = manifest["parity"]
            m = kind.evaluate(model_path, data, work / f"report-{model}", split="test", run=run_dir)
            entry["test"] = {k: m[k] for k in ("images", "accuracy", "balanced_accuracy", "auroc")}
        entry["total_seconds"] = round(time.monotonic() - t0, 1)
        results[model] = entry
    report = {
        "what": "three classes (grey plate; dark line; bright dot), 60 images each at 96 px, "
        "seeded generator (training/bench/small.py); train --epochs 8 --image-size 96; "
        "split 70/15/15 stratified (the defaults), test used once",
        "results": results,
        "machine": {"cpus": cpus(), "platform": platform.platform()},
        "versions": versions(),
    }
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def cmd_bench_small(args) -> int:
    r = bench_small(args.out, args.work)
    for model, e in r["results"].items():
        test = e.get("test")
        shown = (
            f"test accuracy {test['accuracy']:.3f}, AUROC {test['auroc']:.3f}"
            if test
            else e["export"]
        )
        print(f"{model}: {shown}; trained in {e['train_seconds']:.0f} s ({e['epochs_run']} epochs)")
    print(f"wrote {args.out}")
    return 0
