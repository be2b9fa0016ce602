"""``inspector export RUN``: a run folder -> ``model.onnx`` that carries its manifest.

Steps: rebuild the network in float32 and load the best checkpoint; convert with
``keras.Model.export(format="onnx")`` (tf2onnx, ``common.onnxexport``); embed the
manifest (``inspector.contract.manifest``) and write it beside the model as JSON; then check
parity: the validation images go through Keras and through the runtime's own loading
path (``inspector.station.classifier.Classifier``); the largest score difference and the
decision flips are recorded, and the export fails when there is a flip or the difference
exceeds the tolerance. Optional FP16 and INT8 variants are written beside it, each with
its score and accuracy change on the validation images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from inspector.contract.manifest import embed

from .. import TrainingError
from ..common import guard, thresholds
from ..common.config import TrainConfig
from ..common.metrics import defect_score, is_defect
from ..common.onnxexport import manifest_for, rename_output, to_onnx
from ..common.runs import spec_of
from ..data import datasets, frames, runsplit
from . import variants as _variants
from .cam import MAP_OUTPUT, cam_model
from .ensemble import check_members, ensemble_model, ensemble_record
from .models import load_best
from .parity import compare as _compare
from .parity import onnx_scores as _onnx_scores
from .parity import onnx_scores_and_maps as _onnx_scores_and_maps
from .tta import transforms_of, tta_model

log = logging.getLogger(__name__)


def split_images(run: Path, cfg: TrainConfig, info: dict, split: str):
    """The images of one split of the run, through the runtime's preprocessing."""
    samples = runsplit.samples_of_run(run, split)
    data, bad = datasets.load_split(samples, spec_of(cfg, frames.of_run(info)), info["classes"])
    if bad:
        log.warning("%d image(s) of the %s split are no longer readable", len(bad), split)
    return data


def _rechoose_threshold(net, cfg: TrainConfig, info: dict, val, has_map: bool) -> dict:
    """``info``'s threshold chosen again, by the run's policy, on the validation scores of
    ``net`` (test-time-flipped, or an ensemble)."""
    probs = net.predict(val.x, batch_size=16, verbose=0)
    probs = (probs[0] if has_map else probs).astype(np.float64)
    classes, defects = info["classes"], info["defect_classes"]
    truth, score = is_defect(val.y, classes, defects), defect_score(probs, classes, defects)
    return thresholds.choose_by(cfg.threshold, truth, score)


def _tta_record(n: int, threshold_before: float) -> dict:
    return {
        "transforms": n,
        "meaning": "each image judged under the flips"
        + (" and quarter turns" if n == 8 else "")
        + " the run was trained with; the mean of the probabilities",
        "threshold_without_tta": threshold_before,
    }


def _with_map(model, classes, defects, heatmap: bool | None):
    """``model`` with its class map output where the head allows one (``cam_model``)."""
    if heatmap is False:
        return model
    try:
        return cam_model(model, classes, defects)
    except TrainingError as exc:
        if heatmap:
            raise
        log.info("no class map: %s", exc)
        return model


def export(
    run: Path,
    out: Path,
    tolerance: float = 1e-4,
    fp16: bool = False,
    int8: bool = False,
    force: bool = False,
    heatmap: bool | None = None,
    tta: bool = False,
    members: list[Path] = (),
) -> dict:
    """Write ``out`` (+ sidecar JSON, + variants); returns the manifest.

    ``heatmap``: add the class-activation map output ``class_map`` (``cam_model``); None (the
    default) adds it where the head allows an exact one, True refuses a head that does not
    (TrainingError), False leaves it out. ``tta``: the graph judges every image under the
    flips (and quarter turns) the run was trained with and averages (``classify.tta``); the
    threshold is then chosen again on validation with the run's policy. ``members``: further
    runs of the same split, averaged with this one in one graph (``classify.ensemble``); the
    threshold is chosen again likewise.

    Refuses (TrainingError, exit 2) a run that learned too little (``training.guard``)
    unless ``force``; a forced export records that in the manifest's ``quality_gate``."""
    import onnx

    run, out = Path(run), Path(out)
    runs = check_members(run, list(members))
    _, cfg, info = runs[0]
    classes, defects = info["classes"], info["defect_classes"]
    models = [load_best(r, c.model, len(classes)) for r, c, _ in runs]
    nets = [_with_map(m, classes, defects, heatmap) for m in models]
    has_map = all(n is not m for n, m in zip(nets, models, strict=True))
    if not has_map:
        nets = models
    net = nets[0] if len(nets) == 1 else ensemble_model(nets)
    val = split_images(run, cfg, info, "val")
    if not len(val.y):
        raise TrainingError(f"{run}: the validation split is empty; parity cannot be checked")
    own_threshold = info["threshold"]["value"]
    if len(runs) > 1:
        info = {**info, "threshold": _rechoose_threshold(net, cfg, info, val, has_map)}
        info["ensemble"] = ensemble_record(runs, own_threshold)
    if tta:
        transforms = transforms_of(cfg.augment)
        net = tta_model(net, transforms)
        before = info["threshold"]["value"]
        info = {**info, "threshold": _rechoose_threshold(net, cfg, info, val, has_map)}
        info["tta"] = _tta_record(len(transforms), before)
    size, channels = cfg.model.image_size, 1 if cfg.model.color == "gray" else 3
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = to_onnx(net, size, channels)
    input_name = graph.graph.input[0].name
    outputs = {len(o.type.tensor_type.shape.dim): o.name for o in graph.graph.output}
    output_name = outputs[2]
    if has_map:
        rename_output(graph.graph, outputs[3], MAP_OUTPUT)
    onnx.save(graph, str(out))
    manifest = manifest_for(cfg, info, input_name, output_name)
    if has_map:
        grid = [int(d) for d in net.outputs[1].shape[1:]]
        manifest["outputs"] = {
            "class_map": {
                "name": MAP_OUTPUT,
                "kind": "cam",
                "shape": [None, *grid],
                "meaning": "class-activation map of the last feature map: logit of the most "
                "probable defect class minus that of the most probable good class at each "
                "location (its mean is that logit difference)"
                + ("; the mean over the test-time flips, each turned back" if tta else "")
                + (f"; the mean over the {len(runs)} members" if len(runs) > 1 else ""),
            }
        }
    for key in ("tta", "ensemble"):
        if key in info:
            manifest[key] = info[key]
    manifest["parity"] = {"status": "pending"}
    embed(out, manifest, write_sidecar=False)

    reference = net.predict(val.x, batch_size=64, verbose=0)
    threshold = info["threshold"]["value"]
    if not has_map:
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
    gate = guard.check(
        is_defect(val.y, classes, defects), defect_score(reference, classes, defects), threshold
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
        variants["fp16"] = _variants.fp16(out, manifest, reference, val, info, threshold)
    if int8:
        train = split_images(run, cfg, info, "train")
        variants["int8"] = _variants.int8(out, manifest, reference, val, train.x, info, threshold)
    if variants:
        manifest["variants"] = variants
    # the Keras twin (float32, no optimizer state): the baseline of `inspector bench`
    twin = models[0] if len(models) == 1 else ensemble_model(models)
    twin = tta_model(twin, transforms_of(cfg.augment)) if tta else twin
    twin.save(str(out.with_suffix(".keras")))
    manifest["keras_twin"] = out.with_suffix(".keras").name
    embed(out, manifest)
    log.info("exported %s (parity max |d| %.1e, %d flips)", out, parity["max_abs_diff"], 0)
    return manifest
