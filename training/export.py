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
MAP_OUTPUT = "class_map"


def cam_model(model, classes: list[str], defect_classes: list[str]):
    """``model`` with a second output, the class-activation map of the defect score.

    For a head ``GlobalAveragePooling2D -> [Dropout] -> Dense "logits"`` the logits are the
    mean over the last feature map A of ``A . W + b``, so the map ``m = A . (w_d - w_g) +
    (b_d - b_g)`` (d: the most probable defect class, g: the most probable good class) is
    exact: its mean is the logit difference ``z_d - z_g`` (Grad-CAM of a GAP + linear head,
    without the ReLU). It costs the logits layer applied at every location of A (a 1x1
    matmul). Output ``(N, h, w)`` float32 on A's grid. Any other head: TrainingError."""
    from .tf import keras

    def producer(tensor):
        return tensor._keras_history.operation

    try:
        dense = model.get_layer("logits")
    except ValueError:
        raise TrainingError(
            f"--heatmap: {model.name} has no 'logits' layer; the class map needs a "
            "global-average-pooling + Dense head"
        ) from None
    layer = producer(dense.input)
    if isinstance(layer, keras.layers.Dropout):
        layer = producer(layer.input)
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
        raise TrainingError(
            f"--heatmap: the head of {model.name} is {type(layer).__name__} + Dense, not "
            "global average pooling + Dense, so no exact class map exists (for the cnn, "
            "train with model.pooling: avg)"
        )
    local = dense(layer.input)  # (N, h, w, C): the logits of every location
    defect = np.array([c in defect_classes for c in classes], np.float32)
    if len(defect_classes) == 1 and len(classes) == 2:
        select = (2.0 * defect - 1.0).reshape(1, 1, 1, -1)  # w_d - w_g, a constant
    else:  # the most probable defect class minus the most probable good class, per image

        def most_probable(mask):  # one-hot (ties share); argmax would not convert
            s = model.output - 2.0 * (1.0 - mask)
            top = keras.ops.cast(s >= keras.ops.max(s, axis=-1, keepdims=True), "float32")
            return top / keras.ops.sum(top, axis=-1, keepdims=True)

        pick = most_probable(defect) - most_probable(1.0 - defect)
        select = keras.ops.reshape(pick, (-1, 1, 1, len(classes)))
    cam = keras.ops.sum(local * select, axis=-1)
    return keras.Model(model.inputs, [model.output, cam], name=f"{model.name}_cam")


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
    heatmap: bool | None = None,
) -> dict:
    """Write ``out`` (+ sidecar JSON, + variants); returns the manifest.

    ``heatmap``: add the class-activation map output ``class_map`` (``cam_model``); None (the
    default) adds it where the head allows an exact one, True refuses a head that does not
    (TrainingError), False leaves it out.

    Refuses (TrainingError, exit 2) a run that learned too little (``training.guard``)
    unless ``force``; a forced export records that in the manifest's ``quality_gate``."""
    import onnx

    from .tf import tf

    run, out = Path(run), Path(out)
    cfg, info = load_run(run)
    classes = info["classes"]
    model = load_best(run, cfg.model, len(classes))
    net = model
    if heatmap is not False:
        try:
            net = cam_model(model, classes, info["defect_classes"])
        except TrainingError as exc:
            if heatmap:
                raise
            log.info("no class map: %s", exc)
    size, channels = cfg.model.image_size, 1 if cfg.model.color == "gray" else 3
    out.parent.mkdir(parents=True, exist_ok=True)
    signature = [tf.TensorSpec((None, size, size, channels), tf.uint8, name="image")]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        net.export(
            str(raw), format="onnx", input_signature=signature, opset_version=OPSET, verbose=False
        )
        graph = onnx.load(str(raw))
    input_name = graph.graph.input[0].name
    outputs = {len(o.type.tensor_type.shape.dim): o.name for o in graph.graph.output}
    output_name = outputs[2]
    if net is not model:
        _rename_output(graph.graph, outputs[3], MAP_OUTPUT)
    onnx.save(graph, str(out))
    manifest = manifest_for(cfg, info, input_name, output_name)
    if net is not model:
        grid = [int(d) for d in net.outputs[1].shape[1:]]
        manifest["outputs"] = {
            "class_map": {
                "name": MAP_OUTPUT,
                "kind": "cam",
                "shape": [None, *grid],
                "meaning": "class-activation map of the last feature map: logit of the most "
                "probable defect class minus that of the most probable good class at each "
                "location (its mean is that logit difference)",
            }
        }
    manifest["parity"] = {"status": "pending"}
    embed(out, manifest, write_sidecar=False)

    val = split_images(run, cfg, info, "val")
    if not len(val.y):
        raise TrainingError(f"{run}: the validation split is empty; parity cannot be checked")
    reference = net.predict(val.x, batch_size=64, verbose=0)
    threshold = info["threshold"]["value"]
    if net is model:
        reference = reference.astype(np.float64)
        parity = _compare(reference, _onnx_scores(out, val.x), val.y, info, threshold, tolerance)
    else:
        reference, ref_maps = reference[0].astype(np.float64), reference[1]
        scores, maps = _onnx_scores_and_maps(out, val.x)
        parity = _compare(reference, scores, val.y, info, threshold, tolerance)
        peak = max(float(np.max(np.abs(ref_maps))), 1e-12)
        parity["map_max_rel_diff"] = float(np.max(np.abs(ref_maps - maps))) / peak
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
    if parity.get("map_max_rel_diff", 0.0) > tolerance:
        out.unlink(missing_ok=True)
        raise TrainingError(
            f"parity check failed on the class map: max |Keras - ONNX Runtime| / max |Keras| "
            f"= {parity['map_max_rel_diff']:.2e} (tolerance {tolerance:g}) on {len(val.y)} "
            "validation images; the model was not written"
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


def _onnx_scores_and_maps(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and class maps through the runtime's own loading path."""
    clf = Classifier(ModelSection(path=path, warmup_runs=0))
    runs = [
        clf.run_with_maps(np.ascontiguousarray(x[i : i + clf.max_batch]))
        for i in range(0, len(x), clf.max_batch)
    ]
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


def _rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
        node.input[:] = [new if n == old else n for n in node.input]
    for o in graph.output:
        if o.name == old:
            o.name = new


def _compare(reference, scores, y, info, threshold, tie: float = 0.0) -> dict:
    """Scores and decisions of ``scores`` against the Keras ``reference``. A decision that
    differs only for a part whose reference score lies within ``tie`` of the threshold is
    counted as a tie, not a flip: numerically the two runtimes cannot tell it apart."""
    classes, defects = info["classes"], info["defect_classes"]
    truth = is_defect(y, classes, defects)
    ref = defect_score(reference, classes, defects)
    a = ref >= threshold
    b = defect_score(scores, classes, defects) >= threshold
    differ = a != b
    at_threshold = np.abs(ref - threshold) <= tie
    return {
        "max_abs_diff": float(np.max(np.abs(reference - scores))),
        "flips": int(np.sum(differ & ~at_threshold)),
        "ties_at_threshold": int(np.sum(differ & at_threshold)),
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
