"""``inspector bench anomaly --out docs/bench-anomaly.json``: the figures of good-parts-only
models, each from one fit and export of the anomaly kind (``training.registry``), as
``inspector train --method anomaly`` and ``export`` make them.

- generated: plain textured parts (a grey level, a gradient, a fine woven texture, noise),
  defects drawn at known places (a dark or bright scratch, a spot, a smudge); fitted on
  50 good parts (10 more for the threshold), tested on 100 good and 100 defective ones:
  image AUROC, and the share of defective parts whose heat-map maximum lies inside the
  defect's box (widened by one feature cell, the map's resolution);
- CPU batch 1: the anomaly model's latency against the backbone alone (the same
  EfficientNet-Lite, pooled, at the same input size), both through ONNX Runtime with the
  same options; the ONNX file size and the memory bank's bytes;
- ELPV (``elpv-dataset``): the Deitsch split (seeded stratified 75/25, as
  ``bench accuracy``), fitted on the good cells of the training part only, the threshold
  chosen on the validation part carved from it, tested on the 656 test cells: image AUROC
  and the fit time.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from .. import registry

log = logging.getLogger(__name__)
SIZE = 224


# -- the generated set ----------------------------------------------------------------------
def textured_part(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(100, 150)
    gx, gy = rng.uniform(-12, 12, 2) / size
    period = rng.uniform(7, 11)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = (
        6 * np.sin(2 * np.pi * xx / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])
    )
    img = base + gx * xx + gy * yy + weave + rng.normal(0, 3.0, (size, size))
    return img


def draw_defect(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The image with one defect, and its box [x0, y0, x1, y1] (pixels, inclusive)."""
    size = img.shape[0]
    mask = np.zeros(img.shape, np.uint8)
    lo, hi = size // 8, size - size // 8
    kind = rng.integers(3)
    if kind == 0:  # scratch
        x0, y0 = rng.integers(lo, hi, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(size / 8, size / 4)
        x1 = int(np.clip(x0 + length * np.cos(angle), lo, hi))
        y1 = int(np.clip(y0 + length * np.sin(angle), lo, hi))
        cv2.line(mask, (int(x0), int(y0)), (x1, y1), 255, int(rng.integers(2, 4)))
    elif kind == 1:  # spot
        cx, cy = rng.integers(lo, hi, 2)
        cv2.circle(mask, (int(cx), int(cy)), int(rng.integers(3, 8)), 255, -1)
    else:  # smudge
        cx, cy = rng.integers(lo, hi, 2)
        axes = (int(rng.integers(6, 14)), int(rng.integers(4, 9)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    sign = -1 if rng.random() < 0.7 else 1
    out = np.where(mask > 0, img + sign * rng.uniform(35, 60), img)
    ys, xs = np.nonzero(mask)
    return out, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def write_generated(root: Path, seed: int = 7, size: int = SIZE) -> dict:
    """train/good (50), val/good (10) and test/{good,defect} (100 each) with the boxes."""
    rng = np.random.default_rng(seed)
    boxes = {}
    for split, label, n in (
        ("train", "good", 50),
        ("val", "good", 10),
        ("test", "good", 100),
        ("test", "defect", 100),
    ):
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = textured_part(rng, size)
            if label == "defect":
                img, box = draw_defect(rng, img)
                boxes[f"{label}/{i:04d}.png"] = box
            cv2.imwrite(str(folder / f"{i:04d}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return boxes


def _fit_and_export(data: Path, run: Path, values: dict) -> tuple[dict, dict, float]:
    """Fit and export the anomaly kind with dotted settings over its defaults."""
    kind = registry.get("anomaly")
    cfg, settings = registry.configure(kind.name, data, values)
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.monotonic()
    info = kind.train(cfg, run, settings)
    fit_seconds = time.monotonic() - t0
    manifest = kind.export(run, run / "model.onnx")
    return manifest, info, fit_seconds


def bench_generated(work: Path) -> dict:
    from ..anomaly.evaluate import AnomalyRunner
    from ..common.metrics import auroc
    from ..data.datasets import load_split, scan

    data = work / "generated"
    shutil.rmtree(data, ignore_errors=True)
    boxes = write_generated(data)
    manifest, info, fit_seconds = _fit_and_export(
        data, work / "generated-run", {"anomaly.coreset": 0.1, "model.image_size": SIZE}
    )
    runner = AnomalyRunner(work / "generated-run" / "model.onnx")
    test = [s for s in scan(data).samples if s.split == "test"]
    split, _ = load_split(test, runner.spec, ["defect", "good"])
    n, maps = runner(split.x)
    truth = split.y == 0
    h, w = maps.shape[1:]
    cell = SIZE / w
    inside = []
    for i in np.flatnonzero(truth):
        key = f"defect/{Path(split.files[i]).name}"
        x0, y0, x1, y1 = boxes[key]
        r, c = np.unravel_index(int(np.argmax(maps[i])), (h, w))
        cx, cy = (c + 0.5) * cell, (r + 0.5) * cell
        inside.append(x0 - cell <= cx <= x1 + cell and y0 - cell <= cy <= y1 + cell)
    op = truth == (n >= 0.5)
    return {
        "images": {"fit_good": 50, "threshold_good": 10, "test_good": 100, "test_defect": 100},
        "image_size": SIZE,
        "image_auroc": auroc(truth, n),
        "map_max_inside_defect_box": round(float(np.mean(inside)), 4),
        "box_tolerance_px": round(cell, 1),
        "accuracy_at_threshold": round(float(np.mean(op)), 4),
        "escape_rate": round(float(np.mean(n[truth] < 0.5)), 4),
        "false_reject_rate": round(float(np.mean(n[~truth] >= 0.5)), 4),
        "fit_seconds": round(fit_seconds, 1),
        "bank": _bank(manifest),
        "onnx_bytes": (work / "generated-run" / "model.onnx").stat().st_size,
        "parity": manifest["parity"],
    }


def _bank(manifest: dict) -> dict:
    a = manifest["anomaly"]
    keys = ("statistics", "bank_size", "bank_bytes", "feature_dims", "grid", "coreset_fraction")
    keys += ("layers", "components", "component_images", "region", "regions", "shrinkage")
    return {k: a[k] for k in keys if k in a}


# -- latency ---------------------------------------------------------------------------------
def backbone_onnx(path: Path, variant: str, size: int) -> Path:
    """The backbone alone: uint8 grey in, pooled 1280 features out (what a classifier runs)."""
    import onnx

    from ..common.backbone import efficientnet_lite
    from ..common.onnxexport import OPSET
    from ..common.tf import keras, tf

    inputs = keras.Input((size, size, 1), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    x = keras.layers.Concatenate()([x, x, x])
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(efficientnet_lite(variant, size)(x))
    model = keras.Model(inputs, x)
    signature = [tf.TensorSpec((None, size, size, 1), tf.uint8, name="image")]
    model.export(str(path), format="onnx", input_signature=signature, opset_version=OPSET)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def batch1_ms(path: Path, size: int, runs: int = 200) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).integers(0, 255, (1, size, size, 1), dtype=np.uint8)
    for _ in range(20):
        session.run(None, {name: x})
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {name: x})
        lat.append((time.perf_counter() - t) * 1000.0)
    return {
        "p50": round(float(np.percentile(lat, 50)), 2),
        "p90": round(float(np.percentile(lat, 90)), 2),
    }


def bench_latency(work: Path, anomaly_model: Path, variant: str, size: int) -> dict:
    backbone = work / f"backbone-{variant}-{size}.onnx"
    if not backbone.is_file():
        backbone_onnx(backbone, variant, size)
    # interleaved, twice each: a busy machine slows both alike
    a1, b1 = batch1_ms(anomaly_model, size), batch1_ms(backbone, size)
    a2, b2 = batch1_ms(anomaly_model, size), batch1_ms(backbone, size)
    a = min(a1["p50"], a2["p50"])
    b = min(b1["p50"], b2["p50"])
    return {
        "image_size": size,
        "anomaly_model_ms_p50": a,
        "backbone_alone_ms_p50": b,
        "ratio": round(a / b, 2),
        "runs": {"anomaly": [a1, a2], "backbone": [b1, b2]},
        "onnx_bytes": anomaly_model.stat().st_size,
        "backbone_onnx_bytes": backbone.stat().st_size,
    }


# -- ELPV ------------------------------------------------------------------------------------
def elpv_values() -> dict:
    """The ELPV benches' settings under every recipe: the Deitsch split, validation carved
    from the training part."""
    from ..data.elpv import SEED

    return {
        "model.image_size": SIZE,
        "split.test": 0.25,
        "split.val": 0.75 * 0.15,
        "split.seed": SEED,
        "threshold.policy": "max_f1",
    }


def bench_elpv(work: Path, limit: int = 0) -> dict:
    from ..data.elpv import import_elpv

    data = work / ("elpv" if not limit else f"elpv-{limit}")
    if not (data / "manifest.csv").exists():
        import_elpv(data, limit=limit)
    run = work / ("elpv-run" if not limit else f"elpv-{limit}-run")
    manifest, info, fit_seconds = _fit_and_export(data / "manifest.csv", run, elpv_values())
    kind = registry.get("anomaly")
    m = kind.evaluate(run / "model.onnx", data, work / "elpv-report", split="test", run=run)
    return {
        "protocol": "ELPV binarised at 0.5; seeded stratified 75/25 split (Deitsch); fitted on "
        "the good cells of the training part only; threshold (max_f1) on the validation part "
        "carved from the training part; test used once",
        "subset": limit or "all 2,624 cells",
        "counts": info["dataset"]["counts"],
        "test_images": m["images"],
        "image_auroc": m["image_auroc"],
        "operating_point": m["operating_point"],
        # ELPV's columns: the annotators' defect probability and the cell type, on test
        "by_column": m["by_column"],
        "fit_seconds": round(fit_seconds, 1),
        "fit_breakdown_seconds": {
            k: info["training"][k] for k in ("feature_seconds", "coreset_seconds", "total_seconds")
        },
        "bank": _bank(manifest),
        "onnx_bytes": (run / "model.onnx").stat().st_size,
        "parity": manifest["parity"],
    }


def bench_anomaly(out: Path, work: Path, elpv: bool = True, elpv_limit: int = 0) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"method": "PatchCore-style: training.anomaly (see training/anomaly/fit.py)"}
    result["generated"] = bench_generated(work)
    result["latency_cpu_batch1"] = bench_latency(
        work, work / "generated-run" / "model.onnx", "efficientnet-lite0", SIZE
    )
    if elpv:
        result["elpv"] = bench_elpv(work, elpv_limit)
        run = work / ("elpv-run" if not elpv_limit else f"elpv-{elpv_limit}-run")
        result["elpv"]["latency_cpu_batch1"] = bench_latency(
            work, run / "model.onnx", "efficientnet-lite0", SIZE
        )
    from ..common.runs import versions

    result["machine"] = {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "note": "a shared 2-core machine, other jobs running: timings are upper bounds",
    }
    result["versions"] = versions()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_bench_anomaly(args) -> int:
    logging.getLogger("training").setLevel(logging.INFO)
    out = args.out or Path("bench-anomaly.json")
    work = args.work if args.work != Path("bench-accuracy") else Path("bench-anomaly")
    r = bench_anomaly(out, work, elpv=not args.skip_elpv, elpv_limit=args.elpv_limit)
    g, lat = r["generated"], r["latency_cpu_batch1"]
    print(
        f"generated: image AUROC {g['image_auroc']:.4f}, map maximum inside the defect box "
        f"{g['map_max_inside_defect_box']:.1%}; CPU batch 1 {lat['anomaly_model_ms_p50']} ms vs "
        f"backbone {lat['backbone_alone_ms_p50']} ms ({lat['ratio']}x)"
    )
    if "elpv" in r:
        e = r["elpv"]
        print(
            f"ELPV: image AUROC {e['image_auroc']:.4f} on {e['test_images']} test cells; fit "
            f"{e['fit_seconds'] / 60:.1f} min"
        )
    print(f"wrote {out}")
    return 0


def add_args(bench) -> None:
    g = bench.add_argument_group("bench anomaly")
    g.add_argument(
        "--elpv-limit",
        type=int,
        default=0,
        help="bench anomaly: a stratified ELPV subset of N cells (0: the whole Deitsch split)",
    )
    g.add_argument("--skip-elpv", action="store_true", help="bench anomaly: generated set only")
