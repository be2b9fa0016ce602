"""FP16 and INT8 variants of an exported classifier, written beside it (``export --fp16/--int8``).

Each carries the manifest (``variant``: fp16 or int8) and its score and accuracy change
against the float32 Keras model on the validation images; neither refuses an export.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    """Static INT8 (QDQ, per-channel weights, min/max on up to 200 training images) after
    ONNX Runtime's ``quant_pre_process``: its graph optimisations fold the constant
    multiplies and adds into the convolutions first, so they are not left as separate
    requantising ops (1.56x FP32 instead of 1.07x on Lite0 at batch 1,
    ``python -m training.bench.int8``)."""
    from .quant import quantize

    path = _variant_path(out, "int8")
    quantize(out, path, train_x, manifest["input"]["name"], preprocess=True)
    return _finish_variant(path, manifest, reference, val, info, threshold, "int8")
