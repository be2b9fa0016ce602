"""``python -m training.bench.cam``: what the class map (``export --heatmap``) costs at run time.

Builds the default classifier (EfficientNet-Lite0, grey, ``--size`` px, random weights: the
latency does not depend on them), exports it to ONNX with and without the ``class_map``
output, and times ONNX Runtime on the CPU at batch 1, the runs of the variants interleaved
so a busy machine slows them alike. Prints JSON: the median and p90 in ms per variant and
the ratio of the map model (scores + map) to the plain one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench.cam")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from ..classify.cam import MAP_OUTPUT, cam_model
    from ..classify.models import build
    from ..common.config import ModelConfig
    from ..common.onnxexport import OPSET, rename_output
    from ..common.tf import tf

    cfg = ModelConfig(type="efficientnet-lite0", image_size=args.size, color="gray", weights="none")
    model = build(cfg, 2)
    nets = {"plain": model, "map": cam_model(model, ["defect", "good"], ["defect"])}
    spec = [tf.TensorSpec((None, args.size, args.size, 1), tf.uint8, name="image")]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if args.threads:
        opts.intra_op_num_threads = args.threads
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        import onnx

        for tag, net in nets.items():
            path = Path(tmp) / f"{tag}.onnx"
            net.export(
                str(path), format="onnx", input_signature=spec, opset_version=OPSET, verbose=False
            )
            graph = onnx.load(str(path))
            if tag == "map":
                rename_output(graph.graph, graph.graph.output[1].name, MAP_OUTPUT)
                onnx.save(graph, str(path))
            sessions[tag] = ort.InferenceSession(str(path), opts, ["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 1), np.uint8)
    name = sessions["plain"].get_inputs()[0].name
    score = {t: s.get_outputs()[0].name for t, s in sessions.items()}
    calls = {
        "plain": lambda: sessions["plain"].run([score["plain"]], {name: x}),
        "map": lambda: sessions["map"].run([score["map"], MAP_OUTPUT], {name: x}),
        "map_model_scores_only": lambda: sessions["map"].run([score["map"]], {name: x}),
    }
    times = {t: [] for t in calls}
    for i in range(args.runs + 20):
        for tag, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= 20:
                times[tag].append((time.perf_counter() - t0) * 1000.0)
    out = {
        t: {
            "p50_ms": round(float(np.median(v)), 3),
            "p90_ms": round(float(np.percentile(v, 90)), 3),
        }
        for t, v in times.items()
    }
    out["ratio_p50"] = round(out["map"]["p50_ms"] / out["plain"]["p50_ms"], 3)
    out["setup"] = {
        "model": f"efficientnet-lite0 {args.size}px grey, batch 1, CPU",
        "cpus": os.cpu_count(),
        "threads": args.threads or "default",
        "runs": args.runs,
        "map_grid": list(nets["map"].outputs[1].shape[1:]),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
