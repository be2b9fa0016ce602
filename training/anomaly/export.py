"""``inspector export RUN`` for an anomaly run: one ONNX file, memory bank and manifest inside.

The Keras graph of ``training.anomaly.graph`` (backbone taps, neighbourhood average, nearest-bank
distance by a matrix product and a min, normalised score) is converted as the classifier
is (``keras.Model.export(format="onnx")``); the bank travels as an initializer. The
manifest says ``kind: anomaly`` and carries the backbone, layers, bank size, coreset
fraction and the score normalisation; ``output`` names the ``scores`` output (``[1 - n,
n]`` over ``good, anomaly``: the station decides it like any two-class model) and
``anomaly.map_output`` the heat map.

Parity, enforced: the validation images go through Keras and through the station's own
loading path (``inspector.station.classifier.Classifier``); the export is refused when a
score differs by more than ``tolerance`` relative or a decision flips. ``verify`` runs the
same check on any ONNX file against its run (a tampered file fails it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from inspector.contract.manifest import embed

from .. import TrainingError
from ..common import thresholds
from ..common.onnxexport import manifest_for, to_onnx
from ..common.runs import spec_of
from ..data import datasets, frames, runsplit
from . import folds as oof
from .config import METHOD, load_anomaly_config
from .graph import features, load_model, load_statistics, reference_scores

log = logging.getLogger(__name__)


def validation_images(run: Path, info: dict, spec) -> datasets.Split:
    samples = runsplit.samples_of_run(run, "val")
    data, bad = datasets.load_split(samples, spec, info["data_classes"])
    if bad:
        log.warning("%d validation image(s) are no longer readable", len(bad))
    if not len(data.y):
        raise TrainingError(f"{run}: the validation split is empty; parity cannot be checked")
    return data


def _spec(cfg, info):
    return spec_of(cfg, frames.of_run(info))


def export(run: Path, out: Path, tolerance: float = 1e-4) -> dict:
    """Write ``out`` (+ sidecar JSON) and return the manifest; refuses on a parity failure."""
    import onnx

    run, out = Path(run), Path(out)
    model, embedder, cfg, acfg, info = load_model(run)
    if info.get("method") != METHOD:
        raise TrainingError(f"{run}: not an anomaly run")
    size, channels = cfg.model.image_size, 1 if cfg.model.color == "gray" else 3
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = to_onnx(model, size, channels)
    outputs = {o.name: len(o.type.tensor_type.shape.dim) for o in graph.graph.output}
    scores_name = next((n for n, rank in outputs.items() if rank == 2), None)
    map_name = next((n for n, rank in outputs.items() if rank == 3), None)
    if scores_name is None or map_name is None:
        raise TrainingError(f"the converted graph has outputs {outputs}, not scores and a map")
    onnx.save(graph, str(out))
    manifest = manifest_for(cfg, info, graph.graph.input[0].name, scores_name)
    a = info["anomaly"]
    t = info["threshold"]
    manifest.update(
        kind="anomaly",
        output={
            "name": scores_name,
            "kind": "softmax",
            "meaning": "[1 - n, n] over (good, anomaly): n = s / (s + t), s the image's "
            f"{_aggregate(a)} {_to_what(info)}, t the threshold; fail at n >= 0.5",
        },
        thresholds={"anomaly": {k: t[k] for k in ("value", "raw", "policy", "target", "metrics")}},
        anomaly={
            **a,
            "map_output": map_name,
            "map": "per patch n = d / (d + t) on the feature grid (h, w); 0.5 is the threshold",
        },
    )
    manifest["training"]["method"] = METHOD
    manifest["parity"] = {"status": "pending"}
    embed(out, manifest, write_sidecar=False)
    try:
        parity, val, got = _verify(run, out, tolerance, model, embedder, info, cfg)
    except TrainingError:
        out.unlink(missing_ok=True)
        raise
    manifest["parity"] = parity
    manifest["thresholds"]["anomaly"].update(_confidence(cfg, info, val, got[:, 1], run))
    manifest["quality_gate"] = {"passed": True, "problems": [], "forced": False}
    manifest["onnx"]["bytes"] = out.stat().st_size
    embed(out, manifest)
    log.info("exported %s (parity max rel %.1e, 0 flips)", out, parity["max_rel_diff"])
    return manifest


def verify(
    run: Path,
    onnx_path: Path,
    tolerance: float = 1e-4,
    *,
    model=None,
    embedder=None,
    info=None,
    cfg=None,
) -> dict:
    """Keras (and the numpy reference) vs ONNX Runtime on the run's validation images.
    Raises TrainingError on a score difference over ``tolerance`` (relative) or a flip."""
    return _verify(Path(run), Path(onnx_path), tolerance, model, embedder, info, cfg)[0]


def _confidence(cfg, info: dict, val: datasets.Split, n: np.ndarray, run: Path) -> dict:
    """The threshold's confidence on the validation images, from the scores the line
    computes (``n``, fail at 0.5): escape and false-reject rates with exact bounds, the
    promise of the run's policy, the trade-off curve and the uncertain band; with
    ``anomaly.folds``, the good training images' out-of-fold scores count too."""
    good = [i for i, c in enumerate(info["data_classes"]) if c.lower() in datasets.GOOD_NAMES]
    truth = ~np.isin(val.y, good)
    t = info["threshold"]
    where, held_out = {}, {"held_out_good": t.get("held_out_good")}
    extra = oof.load(run)
    if extra is not None:  # raw distances of good images -> the line's n = s / (s + t)
        n = np.r_[n, extra / (extra + t["raw"])]
        truth = np.r_[truth, np.zeros(len(extra), bool)]
        where = {"on": oof.ON, "images": oof.IMAGES}
    out = thresholds.describe(
        truth,
        n,
        0.5,
        policy=t.get("policy"),
        target=t.get("target"),
        confidence=cfg.threshold.confidence,
        band=cfg.threshold.band,
        fallback=t.get("fallback"),
        **where,
    )
    if out["warning"]:
        log.warning("threshold: %s", out["warning"])
    keep = ("confidence", "promise", "warning", "curve", "uncertain_band")
    return {**{k: out[k] for k in keep}, **held_out}


def _verify(run: Path, onnx_path: Path, tolerance, model, embedder, info, cfg):
    """(parity, validation images, ONNX Runtime's scores): see ``verify``."""
    from inspector.errors import ModelError
    from inspector.station.classifier import Classifier
    from inspector.station.config import ModelSection

    if model is None:
        model, embedder, cfg, _, info = load_model(run)
    val = validation_images(Path(run), info, _spec(cfg, info))
    ref = model.predict(val.x, batch_size=8, verbose=0)
    ref_scores = np.asarray(ref["scores"], np.float64)
    try:
        clf = Classifier(ModelSection(path=Path(onnx_path), warmup_runs=0))
        got = clf.run_all(val.x)
    except ModelError as exc:
        raise TrainingError(*exc.problems) from None
    rel = np.abs(ref_scores - got) / np.maximum(np.abs(ref_scores), 1e-6)
    flips = int(np.sum((ref_scores[:, 1] >= 0.5) != (got[:, 1] >= 0.5)))
    t = info["threshold"]["raw"]
    top_k = load_anomaly_config(Path(run) / "anomaly.yaml").top_k
    s = reference_scores(_features(embedder, val.x), load_statistics(run), top_k)
    numpy_n = s / (s + t)
    parity = {
        "images": int(len(val.y)),
        "on": "validation",
        "tolerance": tolerance,
        "max_rel_diff": float(rel.max()),
        "max_abs_diff": float(np.abs(ref_scores - got).max()),
        "flips": flips,
        "numpy_reference_max_abs_diff": float(np.abs(numpy_n - ref_scores[:, 1]).max()),
    }
    if flips or parity["max_rel_diff"] > tolerance:
        raise TrainingError(
            f"parity check failed for {onnx_path}: max relative |Keras - ONNX Runtime| = "
            f"{parity['max_rel_diff']:.2e} (tolerance {tolerance:g}), {flips} decision flip(s) "
            f"on {len(val.y)} validation images; the model is not fit for the line"
        )
    return parity, val, got


def _features(embedder, x):
    return features(embedder, x, 8)


def _to_what(info: dict) -> str:
    if info["anomaly"].get("statistics") == "position":
        if info["anomaly"].get("patch_scale") == "position":
            return "to the nearest Gaussian of its image region, on its position's scale"
        return "to the nearest Gaussian of its image region"
    return "to the memory bank"


def _aggregate(a: dict) -> str:
    k = int(a.get("top_k", 1))
    return "largest patch distance" if k == 1 else f"mean of its {k} largest patch distances"


def normal_text(a: dict) -> str:
    """The model of normal in words, from run.json's or the manifest's ``anomaly``."""
    if a.get("statistics") == "position":
        return (
            f"{a['components']} Gaussian(s) x {a['regions'][0]}x{a['regions'][1]} regions x "
            f"{a['feature_dims']} features (good images per component {a['component_images']})"
        )
    return f"{a['bank_size']:,} bank patches x {a['feature_dims']} features"


def describe(manifest: dict) -> str:
    p, a = manifest["parity"], manifest["anomaly"]
    return (
        f"anomaly model: {normal_text(a)} "
        f"({a['bank_bytes'] / 2**20:.1f} MB), {manifest['onnx']['bytes'] / 2**20:.1f} MB ONNX; "
        f"parity on {p['images']} validation images: max relative |diff| "
        f"{p['max_rel_diff']:.1e}, {p['flips']} decision flips"
    )


def load_manifest(path: Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())
