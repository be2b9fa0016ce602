"""``python -m training.bench.anomalylatency --out docs/bench-anomaly-latency.json``: the
good-parts-only model's CPU latency at batch 1 against the backbone alone, and where it goes.

Fits and exports the anomaly kind on the generated textured parts of ``bench anomaly``
(``training.bench.anomaly.bench_generated``: 50 good parts, coreset 0.1, 224 px; image AUROC
on 100 good and 100 defective parts), builds the backbone alone (the same EfficientNet-Lite0,
pooled: what a classifier runs) and the anomaly model's own feature extractor without the
bank (its ``embedder``), and runs the three through ONNX Runtime's CPU provider with the same
intra-op thread count, alternating run by run: median and p99 of each and the ratio of the
anomaly model to the backbone. ONNX Runtime's profiler then splits the anomaly model's time
by operator (the nearest-bank ``MatMul`` and ``ReduceMin`` against the convolutions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .anomaly import backbone_onnx, bench_generated


def _session(path: Path, threads: int, profile: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spinning: the idle thread pools of the other sessions would steal the cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embedder_onnx(run: Path, path: Path) -> Path:
    """The anomaly model's feature graph alone (backbone taps, local averaging, upsampling)."""
    from ..anomaly.graph import load_model
    from ..common.onnxexport import OPSET
    from ..common.tf import tf

    _, embed, cfg, _, _ = load_model(run)
    size = cfg.model.image_size
    signature = [tf.TensorSpec((None, size, size, 1), tf.uint8, name="image")]
    embed.export(str(path), format="onnx", input_signature=signature, opset_version=OPSET)
    return path


def interleaved(paths: dict[str, Path], threads: int, runs: int, size: int) -> dict:
    sessions = {t: _session(p, threads) for t, p in paths.items()}
    x = np.random.default_rng(0).integers(0, 256, (1, size, size, 1), np.uint8)
    times = {t: [] for t in sessions}
    for i in range(runs + 20):
        for tag, s in sessions.items():
            feed = {s.get_inputs()[0].name: x}
            t0 = time.perf_counter()
            s.run(None, feed)
            if i >= 20:
                times[tag].append((time.perf_counter() - t0) * 1000.0)
    return {
        t: {
            "p50_ms": round(float(np.median(v)), 3),
            "p99_ms": round(float(np.percentile(v, 99)), 3),
        }
        for t, v in times.items()
    }


def op_breakdown(path: Path, threads: int, size: int, runs: int = 50) -> dict:
    """Share of the model's node time by operator type (ONNX Runtime's profiler)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        s = _session(path, threads, profile=str(Path(tmp) / "p"))
        x = np.random.default_rng(0).integers(0, 256, (1, size, size, 1), np.uint8)
        feed = {s.get_inputs()[0].name: x}
        for _ in range(runs):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return {
        "node_ms_per_run": round(total / runs / 1000.0, 3),
        "share_by_op": {k: round(v / total, 3) for k, v in top},
    }


def bench(out: Path, work: Path, threads: int, runs: int, run: Path | None = None) -> dict:
    """``run``: time that exported anomaly run (e.g. an ELPV model) instead of fitting the
    generated one."""
    from ..common.runs import versions
    from .anomaly import _bank

    work.mkdir(parents=True, exist_ok=True)
    if run is None:
        generated = bench_generated(work)
        run = work / "generated-run"
        source = {
            k: generated[k]
            for k in ("image_auroc", "map_max_inside_defect_box", "bank", "parity", "fit_seconds")
        }
    else:
        manifest = json.loads((Path(run) / "model.json").read_text())
        source = {"run": str(run), "bank": _bank(manifest), "parity": manifest["parity"]}
    model = json.loads((Path(run) / "model.json").read_text())
    size = model["input"]["shape"][1]
    variant = model["anomaly"].get("backbone", "efficientnet-lite0")
    paths = {
        "anomaly_model": run / "model.onnx",
        "backbone_alone": backbone_onnx(work / f"backbone-{variant}-{size}.onnx", variant, size),
        "anomaly_features_only": embedder_onnx(run, work / f"embedder-{size}.onnx"),
    }
    lat = interleaved(paths, threads, runs, size)
    a, b, e = (lat[k]["p50_ms"] for k in paths)
    bank = source["bank"]
    grid = bank["grid"]
    result = {
        "setup": f"ONNX Runtime CPUExecutionProvider, batch 1, {size} px grey, intra-op threads "
        f"{threads}, {runs} runs per model after 20 warm-up, models alternating run by run",
        "latency": lat,
        "ratio_p50_anomaly_to_backbone": round(a / b, 3),
        "ratio_p99_anomaly_to_backbone": round(
            lat["anomaly_model"]["p99_ms"] / lat["backbone_alone"]["p99_ms"], 3
        ),
        "model_of_normal_ms_p50": round(a - e, 3),
        "model_of_normal_cost": _cost(bank, grid),
        "anomaly_model_ops": op_breakdown(paths["anomaly_model"], threads, size),
        "backbone_ops": op_breakdown(paths["backbone_alone"], threads, size),
        "model": source,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "note": "a shared 2-core machine, other jobs running: ratios from one interleaved "
            "run are comparable, absolute times are upper bounds",
        },
        "versions": versions(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _cost(bank: dict, grid) -> dict:
    """Multiply-adds of the bank search or of the region Gaussians, per image."""
    patches, d = grid[0] * grid[1], bank["feature_dims"]
    if bank.get("statistics") == "position":
        k = bank["components"]
        return {"patches_per_image": patches, "components": k, "multiply_adds": k * patches * d * d}
    return {
        "patches_per_image": patches,
        "bank_size": bank["bank_size"],
        "feature_dims": d,
        "multiply_adds": patches * bank["bank_size"] * d,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench.anomalylatency")
    ap.add_argument("--out", type=Path, default=Path("bench-anomaly-latency.json"))
    ap.add_argument("--work", type=Path, default=Path("bench-anomaly-latency"))
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--runs", type=int, default=300, help="batch-1 runs per model")
    ap.add_argument(
        "--run",
        type=Path,
        help="time this exported anomaly run (its model.onnx) instead of the generated model",
    )
    args = ap.parse_args(argv)
    r = bench(args.out, args.work, args.threads, args.runs, args.run)
    lat = r["latency"]
    print(
        f"anomaly model p50 {lat['anomaly_model']['p50_ms']} ms (p99 "
        f"{lat['anomaly_model']['p99_ms']}), backbone alone p50 {lat['backbone_alone']['p50_ms']}"
        f" ms (p99 {lat['backbone_alone']['p99_ms']}): {r['ratio_p50_anomaly_to_backbone']}x; "
        f"features only {lat['anomaly_features_only']['p50_ms']} ms, model of normal "
        f"{r['model_of_normal_ms_p50']} ms"
        + (f"; image AUROC {r['model']['image_auroc']}" if "image_auroc" in r["model"] else "")
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
