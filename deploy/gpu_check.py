#!/usr/bin/env python3
"""GPU check for a line PC: CUDA and TensorRT execution providers, batch 1 and 32, FP32 and FP16.

    python deploy/gpu_check.py [--model MODEL.onnx] [--runs 200] --out gpu.json

For every combination it records whether the provider really ran (ONNX Runtime falls
back to the CPU silently), throughput and latency p50/p99, and the largest score
difference against the CPU provider. FP16 on TensorRT uses ``trt_fp16_enable``; FP16 on
CUDA converts the graph with ONNX Runtime's float16 tool (inputs and outputs kept).
Each GPU row also gives the figures through an IO binding (``io_binding``), the way the
station runs with a GPU provider.
On a machine without a GPU every combination is reported as unavailable and the
script exits 3. Without ``--model`` it builds the demo model.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def session(path: Path, provider: str, fp16: bool, cache: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if provider == "tensorrt":
        options = {
            "trt_fp16_enable": fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        }
        providers = [
            (PROVIDERS[provider], options),
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ]
    elif provider == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), opts, providers=providers)


def fp16_model(path: Path, out: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def measure(sess, name: str, x: np.ndarray, runs: int) -> dict:
    for _ in range(10):
        sess.run(None, {name: x})
    lat = []
    t0 = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
    return {
        "throughput_fps": round(runs * len(x) / total, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3),
            "p99": round(float(np.percentile(lat, 99)), 3),
        },
    }


def measure_bound(sess, name: str, x: np.ndarray, runs: int) -> dict:
    """``measure`` through an IO binding, as the station runs with a GPU provider
    (``model.io_binding: auto``): input bound where it lies, output copied to the host."""
    io = sess.io_binding()
    out = sess.get_outputs()[0].name

    def run(_sess, _feeds_name, batch):
        io.bind_cpu_input(_feeds_name, batch)
        io.bind_output(out, "cpu")
        _sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    class Bound:
        def run(self, _outputs, feeds):
            return run(sess, name, feeds[name])

    return measure(Bound(), name, x, runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model = args.model
    if model is None:
        from inspector.lab.demo import DEMO_MODEL

        model = DEMO_MODEL
    cpu = session(model, "cpu", False, work)
    inp = cpu.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    rng = np.random.default_rng(0)
    available = ort.get_available_providers()
    results, any_gpu = [], False
    for provider in ("cuda", "tensorrt"):
        for precision in ("fp32", "fp16"):
            for batch in (1, 32):
                row = {"provider": provider, "precision": precision, "batch": batch}
                x = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
                try:
                    path = model
                    if precision == "fp16" and provider == "cuda":
                        path = fp16_model(model, work / "fp16.onnx")
                    sess = session(path, provider, precision == "fp16", work / "trt-cache")
                    active = sess.get_providers()[0]
                    if active != PROVIDERS[provider]:
                        row.update(
                            status="unavailable",
                            active=active,
                            why=f"{PROVIDERS[provider]} did not start (listed: {PROVIDERS[provider] in available})",
                        )
                    else:
                        any_gpu = True
                        ref = cpu.run(None, {inp.name: x})[0]
                        got = sess.run(None, {inp.name: x})[0]
                        row.update(
                            status="ok",
                            active=active,
                            max_abs_diff_vs_cpu=float(np.abs(ref - got).max()),
                            **measure(sess, inp.name, x, args.runs),
                        )
                        row["io_binding"] = measure_bound(sess, inp.name, x, args.runs)
                except Exception as exc:  # a broken CUDA/TensorRT install is a finding, not a crash
                    row.update(status="error", why=str(exc).splitlines()[0][:300])
                results.append(row)
                print(json.dumps(row), flush=True)
    cpu_rows = [
        dict(
            provider="cpu",
            precision="fp32",
            batch=b,
            status="ok",
            **measure(cpu, inp.name, rng.integers(0, 256, (b, *shape), dtype=np.uint8), args.runs),
        )
        for b in (1, 32)
    ]
    report = {
        "model": str(model),
        "onnxruntime": ort.__version__,
        "available_providers": available,
        "python": platform.python_version(),
        "results": cpu_rows + results,
        "gpu_ran": any_gpu,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if any_gpu else 3


if __name__ == "__main__":
    sys.exit(main())
