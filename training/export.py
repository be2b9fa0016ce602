"""``inspector export RUN``: a run folder -> ``model.onnx`` that carries its manifest.

Steps: rebuild the network in float32 and load the best checkpoint; convert with
``keras.Model.export(format="onnx")`` (tf2onnx) at ONNX opset ``OPSET``; embed the
manifest (``inspector.contract.manifest``) and write it beside the model as JSON; then check
parity: the validation images go through Keras and through the runtime's own loading
path (``inspector.station.classifier.Classifier``); the largest score difference and the
decision flips are recorded, and the export fails when there is a flip or the difference
exceeds the tolerance. Optional FP16 and INT8 variants are written beside it, each with
its score and accuracy change on the validation images.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from inspector.contract.manifest import SCHEMA_VERSION, embed
from inspector.station.classifier import Classifier
from inspector.station.config import ModelSection

from . import TrainingError, datasets, frames, guard
from .config import TrainConfig
from .metrics import binary_at, defect_score, is_defect
from .models import load_best
from .train import spec_of

log = logging.getLogger(__name__)
OPSET = 17


def load_run(run: Path) -> tuple[TrainConfig, dict]:
    run = Path(run)
    if not (run / "run.json").is_file():
        raise TrainingError(f"{run}: not a finished run folder (no run.json); train first")
    from inspector.contract.schema import load_yaml

    cfg = load_yaml(TrainConfig, run / "config.yaml")
    return cfg, json.loads((run / "run.json").read_text())


def split_images(run: Path, cfg: TrainConfig, info: dict, split: str):
    """The images of one split of the run, through the runtime's preprocessing."""
    samples = datasets.samples_of_run(run, split)
    data, bad = datasets.load_split(samples, spec_of(cfg, frames.of_run(info)), info["classes"])
    if bad:
        log.warning("%d image(s) of the %s split are no longer readable", len(bad), split)
    return data


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


def export(
    run: Path,
    out: Path,
    tolerance: float = 1e-4,
    fp16: bool = False,
    int8: bool = False,
    force: bool = False,
) -> dict:
    """Write ``out`` (+ sidecar JSON, + variants); returns the manifest.

    Refuses (TrainingError, exit 2) a run that learned too little (``training.guard``)
    unless ``force``; a forced export records that in the manifest's ``quality_gate``."""
    import onnx

    from .tf import tf

    run, out = Path(run), Path(out)
    cfg, info = load_run(run)
    classes = info["classes"]
    model = load_best(run, cfg.model, len(classes))
    size, channels = cfg.model.image_size, 1 if cfg.model.color == "gray" else 3
    out.parent.mkdir(parents=True, exist_ok=True)
    signature = [tf.TensorSpec((None, size, size, channels), tf.uint8, name="image")]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        model.export(
            str(raw), format="onnx", input_signature=signature, opset_version=OPSET, verbose=False
        )
        graph = onnx.load(str(raw))
    input_name = graph.graph.input[0].name
    output_name = graph.graph.output[0].name
    onnx.save(graph, str(out))
    manifest = manifest_for(cfg, info, input_name, output_name)
    manifest["parity"] = {"status": "pending"}
    embed(out, manifest, write_sidecar=False)

    val = split_images(run, cfg, info, "val")
    if not len(val.y):
        raise TrainingError(f"{run}: the validation split is empty; parity cannot be checked")
    reference = model.predict(val.x, batch_size=64, verbose=0).astype(np.float64)
    threshold = info["threshold"]["value"]
    parity = _compare(reference, _onnx_scores(out, val.x), val.y, info, threshold)
    parity.update(tolerance=tolerance, images=int(len(val.y)), on="validation")
    manifest["parity"] = parity
    classes_, defects_ = info["classes"], info["defect_classes"]
    gate = guard.check(
        is_defect(val.y, classes_, defects_), defect_score(reference, classes_, defects_), threshold
    )
    manifest["quality_gate"] = {**gate, "forced": bool(force and not gate["passed"])}
    if not gate["passed"] and not force:
        out.unlink(missing_ok=True)
        raise TrainingError(
            f"{run}: this run learned too little to reach a line: {'; '.join(gate['problems'])}; "
            "the model was not written (export --force writes it and records that in the "
            "manifest)"
        )
    if parity["flips"] or parity["max_abs_diff"] > tolerance:
        out.unlink(missing_ok=True)
        raise TrainingError(
            f"parity check failed: max |Keras - ONNX Runtime| = {parity['max_abs_diff']:.2e} "
            f"(tolerance {tolerance:g}), {parity['flips']} decision flip(s) on "
            f"{len(val.y)} validation images; the model was not written"
        )
    variants = {}
    if fp16:
        variants["fp16"] = _variant_fp16(out, manifest, reference, val, info, threshold)
    if int8:
        train = split_images(run, cfg, info, "train")
        variants["int8"] = _variant_int8(out, manifest, reference, val, train.x, info, threshold)
    if variants:
        manifest["variants"] = variants
    # the Keras twin (float32, no optimizer state): the baseline of `inspector bench`
    model.save(str(out.with_suffix(".keras")))
    manifest["keras_twin"] = out.with_suffix(".keras").name
    embed(out, manifest)
    log.info("exported %s (parity max |d| %.1e, %d flips)", out, parity["max_abs_diff"], 0)
    return manifest


def _normalisation(cfg: TrainConfig) -> str:
    if cfg.model.type.startswith("efficientnet-lite"):
        grey = " (grey replicated to RGB)" if cfg.model.color == "gray" else ""
        return f"inside the graph: (x - 127) / 128 in RGB{grey}, as ImageNet-trained"
    if cfg.model.normalize == "per_image":
        return "inside the graph: x / 255, then each image to zero mean, unit variance"
    return "inside the graph (x / 255)"


def _onnx_scores(path: Path, x: np.ndarray) -> np.ndarray:
    """Scores through the runtime's own loading path (manifest, checks, batching)."""
    return Classifier(ModelSection(path=path, warmup_runs=0)).run_all(x)


def _compare(reference, scores, y, info, threshold) -> dict:
    classes, defects = info["classes"], info["defect_classes"]
    truth = is_defect(y, classes, defects)
    a = defect_score(reference, classes, defects) >= threshold
    b = defect_score(scores, classes, defects) >= threshold
    return {
        "max_abs_diff": float(np.max(np.abs(reference - scores))),
        "flips": int(np.sum(a != b)),
        "accuracy_reference": binary_at(
            truth, defect_score(reference, classes, defects), threshold
        )["accuracy"],
        "accuracy": binary_at(truth, defect_score(scores, classes, defects), threshold)["accuracy"],
    }


def _variant_path(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}.{tag}.onnx")


def _finish_variant(path, manifest, reference, val, info, threshold, tag) -> dict:
    m = json.loads(json.dumps(manifest))
    m["name"] = f"{manifest['name']}-{tag}"
    m["variant"] = tag
    m["parity"] = {"status": "pending"}
    embed(path, m, write_sidecar=False)
    change = _compare(reference, _onnx_scores(path, val.x), val.y, info, threshold)
    change["accuracy_change"] = change["accuracy"] - change["accuracy_reference"]
    m["parity"] = {**change, "on": "validation", "enforced": False}
    embed(path, m)
    return {"file": path.name, "bytes": path.stat().st_size, **change}


def _variant_fp16(out, manifest, reference, val, info, threshold) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = _variant_path(out, "fp16")
    model = convert_float_to_float16(onnx.load(str(out)), keep_io_types=True)
    onnx.save(model, str(path))
    return _finish_variant(path, manifest, reference, val, info, threshold, "fp16")


def _variant_int8(out, manifest, reference, val, train_x, info, threshold) -> dict:
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


def next_steps(out: Path) -> list[str]:
    return [
        f"inspector evaluate {out} --data DATA --out report/",
        f"inspector check station.yaml   # with model.path: {out}",
        "inspector run station.yaml",
    ]
