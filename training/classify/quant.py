"""INT8 static quantisation of an exported classifier, and the variants the INT8 bench compares.

``quantize`` writes an INT8 copy of a float32 ONNX classifier with ONNX Runtime's static
quantisation, calibrated on uint8 images drawn from the training split (batch 1, seeded);
``excluded_convs`` names the convolutions a variant keeps in float32 (depthwise ones, the
first one); ``kernel_ops`` says which operators ONNX Runtime actually runs once it has
fused the quantise/dequantise pairs (``QLinearConv`` runs in INT8, a ``Conv`` in float32).

Example::

    quantize(Path("model.onnx"), Path("model.int8.onnx"), train_x, "image",
             exclude=excluded_convs(Path("model.onnx"), depthwise=True))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 200


def excluded_convs(model: Path, depthwise: bool = False, first: bool = False) -> list[str]:
    """Names of the Conv nodes to keep in float32: depthwise ones (``group`` equal to the
    channel count, more than 1) and/or the first one in graph order."""
    import onnx

    graph = onnx.load(str(model)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    names = []
    for i, node in enumerate(convs):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if (depthwise and group > 1) or (first and i == 0):
            names.append(node.name)
    return names


def quantize(
    fp32: Path,
    out: Path,
    calib_x: np.ndarray,
    input_name: str,
    *,
    per_channel: bool = True,
    fmt: str = "qdq",
    exclude: list[str] | None = None,
    images: int = CALIBRATION_IMAGES,
    seed: int = 0,
    preprocess: bool = False,
) -> Path:
    """Write ``out``: ``fp32`` statically quantised (activations uint8, weights int8),
    calibrated (min/max) on up to ``images`` of ``calib_x`` picked with ``seed``.
    ``fmt``: ``qdq`` (QuantizeLinear/DequantizeLinear pairs ONNX Runtime fuses) or
    ``qoperator`` (QLinearConv etc. written into the file). ``preprocess``: run ONNX Runtime's
    ``quant_pre_process`` first (its graph optimisations, e.g. folding constant multiplies and
    adds into the convolutions, and shape inference), so fewer float ops are left to requantise."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if preprocess:
        import tempfile

        from onnxruntime.quantization.shape_inference import quant_pre_process

        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(fp32), str(ready), skip_symbolic_shape=True)
            return quantize(
                ready,
                out,
                calib_x,
                input_name,
                per_channel=per_channel,
                fmt=fmt,
                exclude=exclude,
                images=images,
                seed=seed,
            )
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(calib_x), size=min(images, len(calib_x)), replace=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calib_x[i : i + 1] for i in pick)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=list(exclude or []),
    )
    return Path(out)


def kernel_ops(model: Path, threads: int = 1) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime runs on the CPU after its optimisations
    (QDQ pairs fused into ``QLinear*`` kernels where it has one; what stays ``Conv`` runs
    in float32)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    return dict(sorted(Counter(n.op_type for n in graph.node).items()))
