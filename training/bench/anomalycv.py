"""``python -m training.bench.anomalycv --out docs/bench-anomaly-elpv-cv.json``: the ELPV
anomaly settings judged out-of-fold on the training part, not on validation alone.

Validation holds 295 cells, 92 of them defective: its AUROC moves by about 0.02 from one
sample to the next, as much as the settings differ, and a choice made on it did not carry
to the test set (three layers: validation 0.910, test 0.896). The good-only model never
sees the training part's 524 defective cells, so they can judge it: the 1,149 good training
cells are dealt into K folds as the fit's ``anomaly.folds`` deals them (seeded), the model
fitted on the other K-1 folds scores the good cells of the fold left out and every defective
training cell, and the fold's AUROC is theirs. The
folds are paired: each setting is fitted and judged on the same cells, so the per-fold
differences between two settings say more than either mean. Validation and test are not
touched. Each candidate's AUROCs are also split by the manifest's columns
(``training.common.groups``): on ELPV by the annotators' defect probability and the cell
type, which says which cells the model loses. The candidates are the sweep's
(``training.bench.anomalysweep``), region-Gaussian ones only (a bank per fold would cost a
coreset each).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from .. import TrainingError, registry
from .anomaly import elpv_values
from .anomalysweep import CANDIDATES


def candidate_folds(manifest: Path, name: str, folds: int) -> dict:
    """One candidate's out-of-fold AUROC on the training part, per fold: the fit's own fold
    path (``anomaly.folds``: the good training cells dealt into folds, each fold's
    complement fitted, the fold's cells scored by it), and every defective training cell
    scored by each fold's model."""
    from ..anomaly import folds as oof
    from ..anomaly.fit import _fit_position, load_data
    from ..anomaly.graph import embedder, features, reference_scores
    from ..anomaly.patchscale import fit_scales
    from ..common import groups
    from ..common.metrics import auroc
    from ..data import datasets

    values = {**elpv_values(), **CANDIDATES[name], "anomaly.folds": folds}
    cfg, acfg = registry.configure("anomaly", manifest, values)
    if acfg.statistics != "position":
        raise TrainingError(f"{name}: only region-Gaussian candidates are judged out-of-fold")
    t0 = time.monotonic()
    data = load_data(cfg)
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)

    def stream(split_name: str):
        for split, _ in datasets.batches(
            data.samples[split_name], data.spec, data.classes, acfg.batch_size
        ):
            yield split

    train = data.samples["train"]
    good = [s for s in train if s.label == data.good]
    fold = oof.assign(len(good), acfg)
    normal, _, models = _fit_position(embed, data, good, stream, datasets.ImageStats(), acfg, fold)
    if acfg.patch_scale == "position":  # each fold's model on its own fit images' scale
        _, models = fit_scales(embed, data, good, acfg, normal, fold, models)
    held_out = oof.out_of_fold_scores(embed, data, good, fold, models, acfg)["scores"]
    bad = [s for s in train if s.label != data.good]
    defective = np.concatenate(
        [
            features(embed, split.x, acfg.batch_size)
            for split, _ in datasets.batches(bad, data.spec, data.classes, 64)
            if len(split.x)
        ]
    )
    bad_meta, good_meta = [dict(s.meta) for s in bad], [dict(s.meta) for s in good]
    columns = groups.groupable(bad_meta + good_meta)
    per_fold, per_fold_groups = [], []
    for k, model in enumerate(models):
        s = np.r_[reference_scores(defective, model, acfg.top_k), held_out[fold == k]]
        truth = np.r_[np.ones(len(defective), bool), np.zeros(int(np.sum(fold == k)), bool)]
        per_fold.append(auroc(truth, s))
        meta = bad_meta + [m for m, f in zip(good_meta, fold, strict=True) if f == k]
        per_fold_groups.append(groups.by_columns(truth, s, meta, columns=columns))
    by_column = groups.mean_over(per_fold_groups)
    for c, values in by_column.items():  # every training cell once: the folds share defects
        for v, entry in values.items():
            entry["defective_cells"] = sum(m[c] == v for m in bad_meta)
            entry["good_cells"] = sum(m[c] == v for m in good_meta)
    return {
        "settings": CANDIDATES[name],
        "per_fold_auroc": [round(a, 4) for a in per_fold],
        "mean_auroc": round(float(np.mean(per_fold)), 4),
        "good_cells": len(held_out),
        "defective_cells": len(defective),
        # the mean over the folds, per value of each manifest column (ELPV: the annotators'
        # defect probability and the cell type): which cells the model loses
        "by_column": by_column,
        "seconds": round(time.monotonic() - t0, 1),
    }


def run(out: Path, work: Path, names: list[str], folds: int) -> dict:
    from ..common.runs import versions
    from ..data.elpv import import_elpv

    data = work / "elpv"
    if not (data / "manifest.csv").exists():
        import_elpv(data)
    results = {}
    for name in names:
        results[name] = candidate_folds(data / "manifest.csv", name, folds)
        logging.getLogger(__name__).info(
            "%s: out-of-fold AUROC %.4f %s",
            name,
            results[name]["mean_auroc"],
            results[name]["per_fold_auroc"],
        )
    first = names[0]
    for name in names[1:]:  # paired, fold by fold, against the first candidate
        d = np.subtract(results[name]["per_fold_auroc"], results[first]["per_fold_auroc"])
        results[name]["vs_first"] = {
            "reference": first,
            "per_fold_difference": [round(float(x), 4) for x in d],
            "folds_better": int(np.sum(d > 0)),
        }
    result = {
        "protocol": f"ELPV binarised at 0.5, the Deitsch split's training part only: its good "
        f"cells in {folds} seeded folds (anomaly.folds: the clusters from all good training "
        "cells, each fold's region Gaussians from the other folds' cells); per fold, that "
        "model scores the fold's good cells and every defective training cell; validation "
        "and test untouched",
        "folds": folds,
        "candidates": results,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform()},
        "versions": versions(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    position = [n for n, c in CANDIDATES.items() if c.get("anomaly.statistics") == "position"]
    ap = argparse.ArgumentParser(prog="python -m training.bench.anomalycv")
    ap.add_argument("--out", type=Path, default=Path("bench-anomaly-elpv-cv.json"))
    ap.add_argument("--work", type=Path, default=Path("bench-anomaly-cv"))
    ap.add_argument(
        "--only",
        action="append",
        choices=position,
        help="candidates, the first the reference (default: all region-Gaussian ones)",
    )
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    r = run(args.out, args.work, args.only or position, args.folds)
    for name, c in r["candidates"].items():
        vs = c.get("vs_first")
        extra = f", better in {vs['folds_better']} of {r['folds']} folds" if vs else ""
        print(f"{name}: out-of-fold AUROC {c['mean_auroc']:.4f} {c['per_fold_auroc']}{extra}")
        for column, values in c["by_column"].items():
            for v, g in values.items():
                vs = [
                    f"{g['defective_cells']} defective vs all good {g['auroc_vs_all_good']}"
                    if g["defective_cells"]
                    else "",
                    f"{g['good_cells']} good vs all defective {g['auroc_vs_all_defective']}"
                    if g["good_cells"]
                    else "",
                ]
                print(f"  {column} = {v}: " + "; ".join(x for x in vs if x))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
