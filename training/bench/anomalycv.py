"""``python -m training.bench.anomalycv --out docs/bench-anomaly-elpv-cv.json``: the ELPV
anomaly settings judged out-of-fold on the training part, not on validation alone.

Validation holds 295 cells, 92 of them defective: its AUROC moves by about 0.02 from one
sample to the next, as much as the settings differ, and a choice made on it did not carry
to the test set (three layers: validation 0.910, test 0.896). The good-only model never
sees the training part's 524 defective cells, so they can judge it: the 1,149 good training
cells are dealt into K folds (seeded); a model fitted on K-1 folds scores the good cells of
the fold left out and every defective training cell, and the fold's AUROC is theirs. The
folds are paired: each setting is fitted and judged on the same cells, so the per-fold
differences between two settings say more than either mean. Validation and test are not
touched. The candidates are the sweep's (``training.bench.anomalysweep``), region-Gaussian
ones only (a bank per fold would cost a coreset each).
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


def _auroc(defective: np.ndarray, good: np.ndarray) -> float:
    """P(a defective cell outscores a good one), ties counted half."""
    d, g = np.asarray(defective)[:, None], np.asarray(good)[None, :]
    return float(np.mean(d > g) + 0.5 * np.mean(d == g))


def candidate_folds(manifest: Path, name: str, folds: int, seed: int) -> dict:
    """One candidate's out-of-fold AUROC on the training part, per fold."""
    from ..anomaly.fit import load_data
    from ..anomaly.gaussian import RegionAccumulator, cluster, mirror_views
    from ..anomaly.graph import embedder, features, reference_scores
    from ..data import datasets

    cfg, acfg = registry.configure("anomaly", manifest, {**elpv_values(), **CANDIDATES[name]})
    if acfg.statistics != "position":
        raise TrainingError(f"{name}: only region-Gaussian candidates are judged out-of-fold")
    t0 = time.monotonic()
    data = load_data(cfg)
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)
    _, h, w, dim = embed.output.shape

    def feats(samples, flips=False):  # -> [(N, h, w, D)] per view
        views = []
        for split, _ in datasets.batches(samples, data.spec, data.classes, 64):
            if len(split.x):
                views.append(
                    [features(embed, x, acfg.batch_size) for x in mirror_views(split.x, flips)]
                )
        return [np.concatenate(v) for v in zip(*views, strict=True)]

    train = data.samples["train"]
    good = feats([s for s in train if s.label == data.good], acfg.flips)
    defective = feats([s for s in train if s.label != data.good])[0]
    fold = np.random.default_rng(seed).permutation(len(good[0])) % folds
    per_fold = []
    for k in range(folds):
        keep = fold != k
        acc = RegionAccumulator(
            cluster(good[0][keep].mean((1, 2)), acfg.components, acfg.seed),
            (h, w),
            acfg.region,
            dim,
        )
        for v, f in enumerate(good):
            acc.add(f[keep], images=v == 0)
        g = acc.gaussians(acfg.shrinkage)
        per_fold.append(
            _auroc(
                reference_scores(defective, g, acfg.top_k),
                reference_scores(good[0][~keep], g, acfg.top_k),
            )
        )
    return {
        "settings": CANDIDATES[name],
        "per_fold_auroc": [round(a, 4) for a in per_fold],
        "mean_auroc": round(float(np.mean(per_fold)), 4),
        "good_cells": len(good[0]),
        "defective_cells": len(defective),
        "seconds": round(time.monotonic() - t0, 1),
    }


def run(out: Path, work: Path, names: list[str], folds: int, seed: int) -> dict:
    from ..common.runs import versions
    from ..data.elpv import import_elpv

    data = work / "elpv"
    if not (data / "manifest.csv").exists():
        import_elpv(data)
    results = {}
    for name in names:
        results[name] = candidate_folds(data / "manifest.csv", name, folds, seed)
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
        f"cells in {folds} seeded folds (seed {seed}); per fold, region Gaussians fitted on the "
        "other folds' good cells score that fold's good cells and every defective training "
        "cell; validation and test untouched",
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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    r = run(args.out, args.work, args.only or position, args.folds, args.seed)
    for name, c in r["candidates"].items():
        vs = c.get("vs_first")
        extra = f", better in {vs['folds_better']} of {r['folds']} folds" if vs else ""
        print(f"{name}: out-of-fold AUROC {c['mean_auroc']:.4f} {c['per_fold_auroc']}{extra}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
