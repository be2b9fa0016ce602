"""Out-of-fold thresholds for a line with few validation images: ``python -m
training.bench.anomalyfolds --out docs/bench-anomaly-folds.json``.

A new line keeps a few hundred good parts and sets aside only a handful for validation. Per
seed, generated parts (``training.bench.anomalyfrr``'s textured plates): 400 good training
parts and 20 good validation parts; one good-only model fitted with ``anomaly.folds: 5``
(``inspector train --method anomaly``, default coreset), exported. Two thresholds from that
fit, each with the upper bound it reports (false-reject rate <= 1 % at 95 %, which needs 299
held-out good parts):

- ``validation only``: from the 20 validation parts' scores alone (what ``anomaly.folds: 0``
  chooses): too few to promise 1 %, it falls back to rejecting none of them;
- ``out-of-fold``: from those 20 and the 400 training parts scored by the fold models
  (the exported model's threshold).

Each is held against the false-reject rate measured on 3,000 new good parts through the
exported ONNX file, and the escape rate on 300 new defective ones. Over seeds: how often
the measured rate lies within the reported bound, and how often the promise is made.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from ..common import bounds
from ..common.metrics import auroc
from .anomalyfrr import SIZE, _part, score

TRAIN_GOOD, VAL_GOOD, FOLDS = 400, 20, 5
TEST_GOOD, TEST_DEFECT = 3000, 300


def write_data(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", TRAIN_GOOD), ("val", VAL_GOOD)):
        folder = root / split / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:04d}.png"), _part(rng, False))


def _raw(n: np.ndarray, t: float) -> np.ndarray:  # n = s / (s + t): back to the distance s
    n = np.minimum(n, 1 - 1e-12)
    return t * n / (1.0 - n)


def one_seed(work: Path, seed: int) -> dict:
    from ..anomaly.bank import choose_threshold
    from ..anomaly.evaluate import AnomalyRunner

    t0 = time.monotonic()
    data, run = work / f"data-{seed}", work / f"run-{seed}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    write_data(data, seed)
    kind = registry.get("anomaly")
    cfg, acfg = registry.configure(
        "anomaly", data, {"model.image_size": SIZE, "anomaly.folds": FOLDS}
    )
    info = kind.train(cfg, run, acfg)
    fit_seconds = time.monotonic() - t0
    manifest = kind.export(run, run / "model.onnx")
    runner = AnomalyRunner(run / "model.onnx")
    t = manifest["thresholds"]["anomaly"]
    good = _raw(score(runner, 1000 + seed, TEST_GOOD, False), t["raw"])
    bad = _raw(score(runner, 2000 + seed, TEST_DEFECT, True), t["raw"])
    val = np.stack(
        [
            cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            for p in sorted((data / "val" / "good").glob("*.png"))
        ]
    )[..., None]
    val_raw = _raw(runner(val)[0], t["raw"])
    logging.getLogger("training.anomaly.bank").setLevel(logging.ERROR)
    val_only = choose_threshold(val_raw, np.zeros(0), cfg, acfg)
    out = {"seed": seed, "fit_seconds": round(fit_seconds, 1)}
    for name, raw_t, block, promise in (
        ("validation only", val_only["raw"], val_only["confidence"], val_only["promise"]),
        ("out-of-fold", t["raw"], t["confidence"], t["promise"]),
    ):
        f = block["false_reject_rate"]
        k, e = int(np.sum(good >= raw_t)), int(np.sum(bad < raw_t))
        measured = bounds.rate_block(k, len(good))
        out[name] = {
            "raw": raw_t,
            "reported": {"k": f["k"], "n": f["n"], "upper": f["upper"]},
            "promise_held": promise["held"],
            "false_reject_rate": measured,
            "within_upper_bound": measured["rate"] <= f["upper"],
            "escape_rate": bounds.rate_block(e, len(bad)),
        }
    out["image_auroc"] = auroc(
        np.r_[np.zeros(len(good), bool), np.ones(len(bad), bool)], np.r_[good, bad]
    )
    out["out_of_fold_seconds"] = info["training"]["out_of_fold_seconds"]
    out["seconds"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(data, ignore_errors=True)
    return out


def bench(work: Path, seeds: int) -> dict:
    t0 = time.monotonic()
    rows = [one_seed(Path(work), 100 + i) for i in range(seeds)]
    summary = {}
    for name in ("validation only", "out-of-fold"):
        r = [row[name] for row in rows]
        within = sum(x["within_upper_bound"] for x in r)
        summary[name] = {
            "promise_held": sum(x["promise_held"] for x in r),
            "within_upper_bound": within,
            "within_upper_bound_interval": bounds.interval(within, len(r)),
            "median_reported_upper": float(np.median([x["reported"]["upper"] for x in r])),
            "pooled_false_reject_rate": bounds.rate_block(
                sum(x["false_reject_rate"]["k"] for x in r),
                sum(x["false_reject_rate"]["n"] for x in r),
            ),
            "pooled_escape_rate": bounds.rate_block(
                sum(x["escape_rate"]["k"] for x in r), sum(x["escape_rate"]["n"] for x in r)
            ),
        }
    return {
        "what": "good-only thresholds from 20 validation parts alone vs with the 400 training "
        "parts scored out-of-fold (anomaly.folds 5); false-reject rate <= 1 % at 95 % asked",
        "command": "python -m training.bench.anomalyfolds --out docs/bench-anomaly-folds.json",
        "generator": {
            "parts": "training.bench.anomaly.textured_part / draw_defect",
            "size_px": SIZE,
            "train_good": TRAIN_GOOD,
            "validation_good": VAL_GOOD,
            "folds": FOLDS,
            "test_good": TEST_GOOD,
            "test_defective": TEST_DEFECT,
        },
        "seeds": seeds,
        "summary": summary,
        "rows": rows,
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/bench-anomaly-folds.json"))
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inspector-bench-anomaly-folds",
        help="the generated parts and the run folders (replaced)",
    )
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    r = bench(args.work, args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    for name, s in r["summary"].items():
        f = s["pooled_false_reject_rate"]
        print(
            f"{name}: promise held in {s['promise_held']} of {r['seeds']}; measured false-reject "
            f"rate within the reported bound in {s['within_upper_bound']} of {r['seeds']} "
            f"(median bound {s['median_reported_upper']:.2%}); pooled {f['k']} of {f['n']} = "
            f"{f['rate']:.2%}; escapes {s['pooled_escape_rate']['rate']:.2%}"
        )
    print(f"wrote {args.out} in {r['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
