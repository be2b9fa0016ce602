"""What every model kind's export shares: Keras -> ONNX at one opset, the manifest's common
part, and the commands a user runs next.

``to_onnx`` converts with ``keras.Model.export(format="onnx")`` (tf2onnx) with a ``uint8``
NHWC input named ``image``; ``manifest_for`` fills the contract's manifest
(``inspector.contract.manifest``) from a run folder; each kind adds its own outputs,
thresholds and parity result.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from pathlib import Path

from inspector.contract.manifest import SCHEMA_VERSION

from ..data import frames
from .config import TrainConfig

OPSET = 17


def to_onnx(net, size: int, channels: int):
    """The ONNX graph (``onnx.ModelProto``) of a Keras model with a uint8 image input."""
    import onnx

    from .tf import tf

    signature = [tf.TensorSpec((None, size, size, channels), tf.uint8, name="image")]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        net.export(
            str(raw), format="onnx", input_signature=signature, opset_version=OPSET, verbose=False
        )
        return onnx.load(str(raw))


def manifest_for(cfg: TrainConfig, info: dict, input_name: str, output_name: str) -> dict:
    size = cfg.model.image_size
    channels = 1 if cfg.model.color == "gray" else 3
    t = info["threshold"]
    setup = frames.of_run(info)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": info["name"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": info["classes"],
        "defect_classes": info["defect_classes"],
        "input": {
            "name": input_name,
            "shape": [None, size, size, channels],
            "dtype": "uint8",
            "layout": "NHWC",
            "color": cfg.model.color,
        },
        "preprocess": {
            "function": "inspector.contract.preprocess.preprocess",
            "size": [size, size],
            "color": cfg.model.color,
            "interpolation": cfg.model.interpolation,
            "normalisation": _normalisation(cfg),
            **(setup.to_dict() if setup is not None else {}),  # unknown for older runs
        },
        "output": {
            "name": output_name,
            "kind": "softmax",
            "meaning": f"probability per class ({', '.join(info['classes'])})",
        },
        "thresholds": {c: t for c in info["defect_classes"]},
        "dataset": info["dataset"],
        "training": {k: v for k, v in info["training"].items() if k != "versions"},
        "versions": info["training"].get("versions", {}),
        "image_stats": info.get("image_stats"),
        "onnx": {"opset": OPSET, "converter": "keras.Model.export (tf2onnx)"},
    }


def _normalisation(cfg: TrainConfig) -> str:
    if cfg.model.type.startswith("efficientnet-lite"):
        grey = " (grey replicated to RGB)" if cfg.model.color == "gray" else ""
        if cfg.model.standardise:
            return (
                f"inside the graph: each image to mean 128 and standard deviation "
                f"{cfg.model.standardise:g}, then (x - 127) / 128 in RGB{grey}"
            )
        return f"inside the graph: (x - 127) / 128 in RGB{grey}, as ImageNet-trained"
    if cfg.model.normalize == "per_image":
        return "inside the graph: x / 255, then each image to zero mean, unit variance"
    return "inside the graph (x / 255)"


def rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
        node.input[:] = [new if n == old else n for n in node.input]
    for o in graph.output:
        if o.name == old:
            o.name = new


def next_steps(out: Path) -> list[str]:
    return [
        f"inspector evaluate {out} --data DATA --out report/",
        f"inspector check station.yaml   # with model.path: {out}",
        "inspector run station.yaml",
    ]
