"""``python -m training.bench.int8 --out docs/bench-int8.json``: FP32 against INT8 for the
default classifier (EfficientNet-Lite0, grey, 160 px), side by side.

Trains a small run on generated parts (``write_parts``: the woven surface of
``training.bench.anomaly`` with drawn defects; ImageNet weights, a few epochs), exports it
with ``--int8`` (the variant ``export`` writes: QDQ, per-channel weights, after ONNX
Runtime's ``quant_pre_process``) and makes other INT8 variants from the same FP32 file
(``training.classify.quant``): without the pre-processing (QDQ and QOperator), per-tensor
weights with and without it, and QDQ with the depthwise convolutions (and the first
convolution) kept in float32. Then, in one process, every model runs batch 1 on the CPU provider with the same
intra-op thread count, the models alternating run by run so a busy machine slows them
alike: median and p99 per model and the ratio of FP32's median to each, and ONNX Runtime's
profiled kernel time per run (the same ratio, less disturbed by other jobs). Accuracy of each at
the run's threshold on a seeded held-out set of generated parts, the largest score change
against FP32, and the operators ONNX Runtime runs after fusing (INT8 ``QLinear*`` kernels vs
float32 ones). Prints one summary line per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from .anomaly import draw_defect, textured_part
from .anomalylatency import op_breakdown

SIZE = 160
HELD_OUT_SEED = 2026
TRAIN_SEED = 21
EXCLUDED: dict[str, int] = {}  # variant -> Conv nodes left in float32 in its file


def _cpu_flags() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "Model name" in ln), ""
    )
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if "Flags" in ln), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"model": model, **{f: f in flags for f in wanted}}


def write_parts(folder: Path, n: int, seed: int, defect_rate: float = 0.4) -> dict[str, bool]:
    """``n`` generated parts (the woven surface of ``training.bench.anomaly``, a scratch, spot
    or smudge on the defective ones) in ``good/`` and ``defect/``; {relative path: defect}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        defect = bool(rng.random() < defect_rate)
        img = textured_part(rng, SIZE)
        if defect:
            img, _ = draw_defect(rng, img)
        name = f"{'defect' if defect else 'good'}/{i:05d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.clip(img, 0, 255).astype(np.uint8))
        truth[name] = defect
    return truth


def _train(work: Path, epochs: int) -> tuple[Path, dict]:
    from ..common.config import TrainConfig, override, validate

    data, run, model = work / "data", work / "run", work / "model.onnx"
    shutil.rmtree(work, ignore_errors=True)
    write_parts(data, 240, seed=TRAIN_SEED)
    cfg = TrainConfig(data=data, name="int8-bench")
    for key, value in {
        "model.type": "efficientnet-lite0",
        "model.image_size": SIZE,
        "train.epochs": epochs,
        "train.head_epochs": 1,
    }.items():
        cfg = override(cfg, key, value)
    validate(cfg)
    kind = registry.get("classify")
    kind.train(cfg, run)
    kind.export(run, model, int8=True, force=True)
    return model, json.loads(model.with_suffix(".json").read_text())


def _held_out(work: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    folder = work / "held-out"
    truth = write_parts(folder, n, seed=HELD_OUT_SEED)
    names = sorted(truth)
    x = np.stack([cv2.imread(str(folder / k), cv2.IMREAD_GRAYSCALE) for k in names])[..., None]
    return x, np.array([truth[k] for k in names])


def _variants(model: Path, manifest: dict) -> dict[str, Path]:
    from ..classify import quant
    from ..classify.export import split_images
    from ..common.runs import load_run

    run = model.parent / "run"
    cfg, info = load_run(run)
    train_x = split_images(run, cfg, info, "train").x
    name = manifest["input"]["name"]
    paths = {"fp32": model, "int8_export": model.with_name("model.int8.onnx")}
    plans = {  # the export's variant is QDQ, per-channel, after quant_pre_process
        "int8_qdq_per_channel_not_preprocessed": dict(),
        "int8_qoperator_per_channel_not_preprocessed": dict(fmt="qoperator"),
        "int8_qdq_per_channel_fp32_depthwise": dict(
            exclude=quant.excluded_convs(model, depthwise=True)
        ),
        "int8_qdq_per_channel_fp32_depthwise_first": dict(
            exclude=quant.excluded_convs(model, depthwise=True, first=True)
        ),
        "int8_qdq_per_tensor_not_preprocessed": dict(per_channel=False),
        "int8_qdq_per_tensor_preprocessed": dict(per_channel=False, preprocess=True),
    }
    for tag, kw in plans.items():
        paths[tag] = quant.quantize(model, model.with_name(f"{tag}.onnx"), train_x, name, **kw)
        EXCLUDED[tag] = len(kw.get("exclude", []))
    return paths


def _latency(paths: dict[str, Path], threads: int, runs: int) -> dict:
    import onnxruntime as ort

    sessions = {}
    for tag, path in paths.items():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no spinning: the idle thread pools of the other sessions would steal the cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[tag] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 1), np.uint8)
    name = sessions["fp32"].get_inputs()[0].name
    outs = {t: [s.get_outputs()[0].name] for t, s in sessions.items()}
    times = {t: [] for t in sessions}
    for i in range(runs + 30):
        for tag, s in sessions.items():
            t0 = time.perf_counter()
            s.run(outs[tag], {name: x})
            if i >= 30:
                times[tag].append((time.perf_counter() - t0) * 1000.0)
    base = float(np.median(times["fp32"]))
    return {
        t: {
            "p50_ms": round(float(np.median(v)), 3),
            "p99_ms": round(float(np.percentile(v, 99)), 3),
            "speedup_p50_vs_fp32": round(base / float(np.median(v)), 3),
        }
        for t, v in times.items()
    }


def bench(out: Path, work: Path, threads: int, runs: int, epochs: int, held_out: int) -> dict:
    from ..classify import quant
    from ..classify.parity import onnx_scores
    from ..common.metrics import defect_score
    from ..common.runs import versions

    model, manifest = _train(work, epochs)
    paths = _variants(model, manifest)
    x, truth = _held_out(work, held_out)
    classes, defects = manifest["classes"], manifest["defect_classes"]
    threshold = manifest["thresholds"][defects[0]]["value"]
    scores = {t: onnx_scores(p, x) for t, p in paths.items()}
    ref = defect_score(scores["fp32"], classes, defects)
    lat = _latency(paths, threads, runs)
    nodes = {t: op_breakdown(p, threads, SIZE, runs=100) for t, p in paths.items()}
    models = {}
    for tag, path in paths.items():
        s = defect_score(scores[tag], classes, defects)
        ops = quant.kernel_ops(path, threads)
        models[tag] = {
            "file_bytes": path.stat().st_size,
            "convs_left_float32_in_file": EXCLUDED.get(tag, 0),
            "held_out_accuracy": round(float(np.mean((s >= threshold) == truth)), 4),
            "max_abs_score_change_vs_fp32": round(float(np.max(np.abs(s - ref))), 4),
            "decision_flips_vs_fp32": int(np.sum((s >= threshold) != (ref >= threshold))),
            **lat[tag],
            "node_ms_per_run": nodes[tag]["node_ms_per_run"],
            "speedup_node_time_vs_fp32": round(
                nodes["fp32"]["node_ms_per_run"] / nodes[tag]["node_ms_per_run"], 3
            ),
            "node_time_share_by_op": nodes[tag]["share_by_op"],
            "runtime_ops": {
                "int8": {k: v for k, v in ops.items() if k.startswith(("QLinear", "QGemm"))},
                "float32_conv": sum(
                    v for k, v in ops.items() if k.endswith("Conv") and not k.startswith("QLinear")
                ),
                "quantize_dequantize": ops.get("QuantizeLinear", 0)
                + ops.get("DequantizeLinear", 0),
                "all": ops,
            },
        }
    result = {
        "model": f"efficientnet-lite0, grey, {SIZE} px, ImageNet weights fine-tuned {epochs} "
        f"epochs on 240 generated parts (training.bench.int8.write_parts, seed {TRAIN_SEED})",
        "held_out": f"{held_out} generated parts (seed {HELD_OUT_SEED}, 40 % defective), "
        f"threshold {threshold} from the run",
        "latency": f"ONNX Runtime CPUExecutionProvider, batch 1, intra-op threads {threads}, "
        f"{runs} runs per model after 30 warm-up, models alternating run by run; node time: "
        "ONNX Runtime's profiler, the sum of its kernel times per run over 100 runs (less "
        "sensitive to other jobs than the wall clock)",
        "calibration": f"{quant.CALIBRATION_IMAGES} training images at most, batch 1, min/max",
        "models": models,
        "note": "convs left in float32 in the file between quantised neighbours are "
        "quantised again by ONNX Runtime when it loads the model (its weight quantisation "
        "of DQ -> Conv -> Q): runtime_ops shows what runs",
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "cpu": _cpu_flags(),
            "platform": platform.platform(),
            "note": "a shared 2-core machine, other jobs running: ratios from one interleaved "
            "run are comparable, absolute times are upper bounds",
        },
        "versions": versions(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench.int8")
    ap.add_argument("--out", type=Path, default=Path("bench-int8.json"))
    ap.add_argument("--work", type=Path, default=Path("bench-int8"))
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--runs", type=int, default=500, help="batch-1 runs per model")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--held-out", type=int, default=200)
    args = ap.parse_args(argv)
    r = bench(args.out, args.work, args.threads, args.runs, args.epochs, args.held_out)
    for tag, m in r["models"].items():
        print(
            f"{tag}: p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms ({m['speedup_p50_vs_fp32']}x "
            f"FP32), node time {m['node_ms_per_run']} ms ({m['speedup_node_time_vs_fp32']}x), held-out accuracy {m['held_out_accuracy']}, max score change "
            f"{m['max_abs_score_change_vs_fp32']}, INT8 kernels {m['runtime_ops']['int8']}, "
            f"float32 convs {m['runtime_ops']['float32_conv']}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
