"""FP16 and INT8 variants of an exported classifier, written beside it (``export --fp16/--int8``).

Each carries the manifest (``variant``: fp16 or int8) and its score and accuracy change
against the float32 Keras model on the validation images; neither refuses an export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inspector.contract.manifest import embed

from .parity import compare, onnx_scores


def _variant_path(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}.{tag}.onnx")


def _finish_variant(path, manifest, reference, val, info, threshold, tag) -> dict:
    m = json.loads(json.dumps(manifest))
    m["name"] = f"{manifest['name']}-{tag}"
    m["variant"] = tag
    m["parity"] = {"status": "pending"}
    embed(path, m, write_sidecar=False)
    change = compare(reference, onnx_scores(path, val.x), val.y, info, threshold)
    change["accuracy_change"] = change["accuracy"] - change["accuracy_reference"]
    m["parity"] = {**change, "on": "validation", "enforced": False}
    embed(path, m)
    return {"file": path.name, "bytes": path.stat().st_size, **change}


def fp16(out, manifest, reference, val, info, threshold) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = _variant_path(out, "fp16")
    model = convert_float_to_float16(onnx.load(str(out)), keep_io_types=True)
    onnx.save(model, str(path))
    return _finish_variant(path, manifest, reference, val, info, threshold, "fp16")


def int8(out, manifest, reference, val, train_x, info, threshold) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    input_name = manifest["input"]["name"]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train_x), size=min(200, len(train_x)), replace=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(train_x[i : i + 1] for i in pick)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    path = _variant_path(out, "int8")
    quantize_static(
        str(out),
        str(path),
        Reader(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return _finish_variant(path, manifest, reference, val, info, threshold, "int8")
