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

``--side-by-side NAME=RUN ...`` times several exported runs and the backbone alone in one
alternating loop instead (settings, or one setting built by two versions of the code), with
a probe of ONNX Runtime's element-wise cost by the shapes of image and constant.
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


def side_by_side(out: Path, work: Path, threads: int, runs: int, named: dict[str, Path]) -> dict:
    """Several exported anomaly runs and the backbone alone, alternating run by run in one
    loop: settings (or the same setting built by two versions of the code) compared on the
    same machine at the same moment, each as a ratio to the backbone."""
    from ..common.runs import versions
    from .anomaly import _bank

    work.mkdir(parents=True, exist_ok=True)
    models = {name: json.loads((Path(r) / "model.json").read_text()) for name, r in named.items()}
    sizes = {m["input"]["shape"][1] for m in models.values()}
    variants = {m["anomaly"].get("backbone", "efficientnet-lite0") for m in models.values()}
    if len(sizes) != 1 or len(variants) != 1:
        raise ValueError(f"one backbone and input size to compare against: {variants} {sizes}")
    size, variant = sizes.pop(), variants.pop()
    paths = {
        "backbone_alone": backbone_onnx(work / f"backbone-{variant}-{size}.onnx", variant, size)
    }
    paths.update({name: Path(r) / "model.onnx" for name, r in named.items()})
    lat = interleaved(paths, threads, runs, size)
    base = lat["backbone_alone"]
    result = {
        "setup": f"ONNX Runtime CPUExecutionProvider, batch 1, {size} px grey, intra-op threads "
        f"{threads}, {runs} runs per model after 20 warm-up, all models alternating run by run",
        "latency": lat,
        "ratio_p50_to_backbone": {n: round(lat[n]["p50_ms"] / base["p50_ms"], 3) for n in named},
        "ratio_p99_to_backbone": {n: round(lat[n]["p99_ms"] / base["p99_ms"], 3) for n in named},
        "runs": {
            n: {
                "run": str(named[n]),
                "standardise": models[n]["anomaly"].get("standardise"),
                "bank": _bank(models[n]),
                "parity": models[n]["parity"],
            }
            for n in named
        },
        "elementwise_probe": elementwise_probe(size, threads),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform()},
        "versions": versions(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def elementwise_probe(size: int, threads: int, runs: int = 300) -> dict:
    """One ``Mul`` of an image by a constant in ONNX Runtime, by the shapes of the two: a
    one-channel image (1, H, W, 1) with a rank-0 constant takes the slow broadcasting path;
    the same constant shaped (1, 1, 1, 1), or a three-channel image, does not. Median ms."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def median_ms(image: tuple, constant: tuple) -> float:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(image))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        c = numpy_helper.from_array(np.full(constant, 0.5, np.float32), "c")
        graph = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["y"])], "g", [x], [y], [c])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
        feed = {"x": np.random.default_rng(0).random(image, np.float32)}
        times = []
        for i in range(runs + 20):
            t0 = time.perf_counter()
            sess.run(None, feed)
            if i >= 20:
                times.append((time.perf_counter() - t0) * 1000.0)
        return round(float(np.median(times)), 4)

    one, three = (1, size, size, 1), (1, size, size, 3)
    return {
        "op": "Mul of a float image by a constant, batch 1",
        "one_channel_rank0_constant_ms": median_ms(one, ()),
        "one_channel_rank4_constant_ms": median_ms(one, (1, 1, 1, 1)),
        "three_channel_rank0_constant_ms": median_ms(three, ()),
    }


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
    ap.add_argument(
        "--side-by-side",
        nargs="+",
        metavar="NAME=RUN",
        help="time these exported runs and the backbone alone together, alternating run by run",
    )
    args = ap.parse_args(argv)
    if args.side_by_side:
        named = {}
        for item in args.side_by_side:
            name, sep, path = item.partition("=")
            if not sep or not name or not (Path(path) / "model.onnx").is_file():
                ap.error(f"--side-by-side {item!r}: give NAME=RUN, a run folder with model.onnx")
            named[name] = Path(path)
        r = side_by_side(args.out, args.work, args.threads, args.runs, named)
        for name, ratio in r["ratio_p50_to_backbone"].items():
            lat = r["latency"][name]
            print(f"{name}: p50 {lat['p50_ms']} ms (p99 {lat['p99_ms']}), {ratio}x the backbone")
        print(f"backbone alone: p50 {r['latency']['backbone_alone']['p50_ms']} ms")
        print(f"wrote {args.out}")
        return 0
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
