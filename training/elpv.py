"""The ELPV solar-cell dataset (PyPI ``elpv-dataset``) and the accuracy benchmark on it.

``import_elpv(dest)`` copies the 2,624 electroluminescence cell images (300x300 gray)
into ``dest/good/`` (defect probability < 0.5) and ``dest/defect/`` (>= 0.5), and writes
``dest/manifest.csv`` with each image's probability and cell type (mono/poly).

``bench_accuracy`` is the protocol of Deitsch et al. 2019: binarised at 0.5, a seeded
stratified 75/25 split (1,968 train / 656 test); validation (early stopping, threshold)
is carved from the training part only, and the test part is used once, for the figures.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from . import TrainingError

log = logging.getLogger(__name__)
SEED = 2019


def package_dir() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise TrainingError(
            "the ELPV images come from the elpv-dataset package: "
            "pip install 'defect-inspector[train]'"
        ) from None
    return Path(elpv_dataset.__file__).parent / "data"


def import_elpv(dest: Path, limit: int = 0, seed: int = SEED) -> dict:
    """Write the dataset into ``dest``; ``limit`` keeps a stratified subset (for tests)."""
    src = package_dir()
    rows = []
    for line in (src / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    if not rows:
        raise TrainingError(f"{src}/labels.csv: no labels found")
    if limit:
        rng = np.random.default_rng(seed)
        defect = [r for r in rows if r[1] >= 0.5]
        good = [r for r in rows if r[1] < 0.5]
        k_def = max(1, round(limit * len(defect) / len(rows)))
        pick_d = rng.choice(len(defect), size=min(k_def, len(defect)), replace=False)
        pick_g = rng.choice(len(good), size=min(limit - len(pick_d), len(good)), replace=False)
        rows = sorted([defect[i] for i in pick_d] + [good[i] for i in pick_g])
    dest = Path(dest)
    counts = {"good": 0, "defect": 0}
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", "cell_type"])
        for rel, prob, kind in rows:
            label = "defect" if prob >= 0.5 else "good"
            target = dest / label / Path(rel).name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(src / rel, target)
            writer.writerow([f"{label}/{target.name}", label, f"{prob:.4f}", kind])
            counts[label] += 1
    log.info("ELPV: %s", counts)
    return {"dest": str(dest), "images": len(rows), "counts": counts}


def bench_accuracy(
    out: Path,
    work: Path,
    epochs: int | None = None,
    image_size: int | None = None,
    max_minutes: float | None = None,
    model: str = "efficientnet-lite0",
    reuse: bool = False,
    variants: bool = True,
) -> dict:
    """Run the benchmark; writes ``out`` (JSON) and returns it.

    ``efficientnet-lite*`` (the default recipe): ImageNet weights, 2 epochs of the head with
    the backbone frozen, then all blocks fine-tuned with batch norm frozen at a fifth of the
    rate. ``cnn``: the earlier from-scratch
    recipe (per-image standardisation, 90 epochs at 160 px)."""
    pretrained = model.startswith("efficientnet-lite")
    epochs = epochs or (24 if pretrained else 90)
    image_size = image_size or (224 if pretrained else 160)
    max_minutes = max_minutes if max_minutes is not None else (50.0 if pretrained else 28.0)
    from inspector.station.classifier import Classifier
    from inspector.station.config import ModelSection

    from .config import TrainConfig, override
    from .evaluate import evaluate
    from .export import export
    from .train import train

    work = Path(work)
    data = work / "elpv"
    if not (data / "manifest.csv").exists():
        import_elpv(data)
    cfg = TrainConfig(data=data, name=f"elpv-{model}-{image_size}")
    for key, value in {
        "model.type": model,
        "model.image_size": image_size,
        "split.test": 0.25,
        "split.val": 0.75 * 0.15,  # 15% of the training part
        "split.seed": SEED,
        # cells look the same under the 8 flips and quarter turns; small rotations and
        # shifts only add border artefacts, and per-image standardisation makes
        # brightness changes moot
        "model.normalize": "per_image",
        "augment.rot90": True,
        "augment.rotation_deg": 0.0,
        "augment.shift": 0.0,
        "augment.noise": 0.0,
        "train.balance": "none",
        "train.epochs": epochs,
        "train.learning_rate": 0.001,
        "train.patience": 30,
        "train.max_minutes": max_minutes,
        "threshold.policy": "max_f1",
    }.items():
        cfg = override(cfg, key, value)
    if pretrained:  # the network normalises as it was trained (in the graph)
        for key, value in {
            "model.normalize": "fixed",
            "model.dropout": 0.3,
            "train.learning_rate": 0.001,
            "train.head_epochs": 2,
            "train.fine_tune": "all",
            "train.fine_tune_lr_scale": 0.2,
            "train.patience": 8,
        }.items():
            cfg = override(cfg, key, value)
    run_dir = work / "run"
    if reuse and (run_dir / "run.json").is_file():  # export, test and time an earlier run
        run = json.loads((run_dir / "run.json").read_text())
        train_seconds = run["training"]["total_seconds"]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.monotonic()
        run = train(cfg, run_dir)
        train_seconds = time.monotonic() - started
    model_path = work / "elpv.onnx"
    manifest = export(run_dir, model_path, fp16=variants, int8=variants)
    metrics = evaluate(model_path, data, work / "report", split="test", run=run_dir)
    clf = Classifier(ModelSection(path=model_path, warmup_runs=0))
    speed = _batch1_speed(clf)
    variant_results = {}
    for tag, v in manifest.get("variants", {}).items():  # side by side with FP32, same run
        path = model_path.with_name(v["file"])
        vm = evaluate(path, data, work / f"report-{tag}", split="test", run=run_dir)
        vs = _batch1_speed(Classifier(ModelSection(path=path, warmup_runs=0)))
        again = _batch1_speed(clf)  # FP32 again right after: the ratio is of neighbours
        variant_results[tag] = {
            "file_bytes": v["bytes"],
            "validation_accuracy_change": v["accuracy_change"],
            "test_accuracy": vm["accuracy"],
            "test_auroc": vm["auroc"],
            "test_accuracy_change": vm["accuracy"] - metrics["accuracy"],
            "cpu_fps_batch1": vs["throughput_fps"],
            "cpu_latency_ms_batch1": vs["latency_ms"],
            "speedup_over_fp32": round(vs["throughput_fps"] / again["throughput_fps"], 3),
            "fp32_fps_batch1_alongside": again["throughput_fps"],
        }
    counts = run["dataset"]["counts"]
    result = {
        "protocol": "ELPV binarised at 0.5; seeded stratified 75/25 split; validation carved "
        "from the training part; test used once",
        "model": model,
        "image_size": image_size,
        "split_counts": counts,
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "f1": metrics["f1"],
        "auroc": metrics["auroc"],
        "escape_rate": metrics["escape_rate"],
        "false_reject_rate": metrics["false_reject_rate"],
        "confusion_matrix": metrics["confusion_matrix"],
        "threshold": manifest["thresholds"]["defect"]["value"],
        "always_good_accuracy": counts["test"]["good"] / max(sum(counts["test"].values()), 1),
        "model_bytes": model_path.stat().st_size,
        "parameters": run["training"]["parameters"],
        "cpu_fps_batch1": speed["throughput_fps"],
        "cpu_latency_ms_batch1": speed["latency_ms"],
        "variants": variant_results,
        "train_seconds": round(train_seconds, 1),
        "time_spent": {
            "head_seconds": (run["training"].get("fine_tuning") or {}).get("head_seconds"),
            "fine_tune_seconds": run["training"]["fit_seconds"],
            "setup_and_threshold_seconds": round(
                train_seconds
                - run["training"]["fit_seconds"]
                - ((run["training"].get("fine_tuning") or {}).get("head_seconds") or 0),
                1,
            ),
            "image_size": image_size,
            "batch_size": cfg.train.batch_size,
            "max_minutes": max_minutes,
        },
        "recipe": run["training"].get("fine_tuning"),
        "epochs_run": run["training"]["epochs_run"],
        "best_epoch": run["training"]["best_epoch"],
        "parity": manifest["parity"],
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
        "versions": run["training"]["versions"],
        "files": {"model": str(model_path), "report": str(work / "report" / "report.html")},
    }
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _batch1_speed(clf, runs: int = 500) -> dict:
    """ONNX Runtime alone at batch 1, measured as `inspector bench` measures it."""
    from inspector.lab.bench import bare

    x = np.full((1, *clf.spec.shape), 128, np.uint8)
    for _ in range(20):
        clf.run(x)
    return bare(clf.session, clf.manifest.input_name, x, 1, runs)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
