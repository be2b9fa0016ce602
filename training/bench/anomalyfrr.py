"""Does the good-only anomaly threshold keep its false-reject promise? ``python -m
training.bench.anomalyfrr --out docs/bench-anomaly-frr.json``.

Seeded generated parts (``training.bench.anomaly``: a grey level, a gradient, a fine woven
texture and noise; defects are scratches, spots and smudges drawn at known places). One
anomaly model is fitted and exported as ``inspector train --method anomaly`` and
``export`` make it: 60 good parts for the bank, 400 good validation parts for the
threshold (the default goal, false-reject rate <= 1 % at 95 %, needs 299). Then, on
parts the fit never saw, through the exported ONNX file:

- the image AUROC on 3,000 new good and 300 new defective parts (goal >= 0.99);
- the false-reject rate measured on the new good parts, with its counts and exact
  interval, against the upper bound the manifest reports (goal: within it);
- the bound's coverage over more validation sets: ``--sets`` disjoint sets of new good
  parts (400 each, and 100 each: too few to promise 1 %, the fallback) choose the
  threshold by the training code (``training.anomaly.bank.choose_threshold``), and each
  threshold's false-reject rate on the 3,000 new good parts is held against its bound.

The bank and the network stay fixed across those sets: the coverage is over the
validation draw, the only thing the bound speaks of.
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
from .anomaly import draw_defect, textured_part

SIZE = 224
FIT_GOOD, VAL_GOOD = 60, 400
TEST_GOOD, TEST_DEFECT = 3000, 300
SMALL_VAL = 100


def _part(rng: np.random.Generator, defect: bool) -> np.ndarray:
    img = textured_part(rng, SIZE)
    if defect:
        img, _ = draw_defect(rng, img)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fit_data(root: Path, seed: int) -> None:
    """train/good and val/good: what ``inspector train --method anomaly`` is given."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", FIT_GOOD), ("val", VAL_GOOD)):
        folder = root / split / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:04d}.png"), _part(rng, False))


def new_parts(seed: int, n: int, defect: bool, spec, chunk: int = 200):
    """``n`` new parts of one seeded stream, preprocessed for the model, in chunks."""
    from inspector.contract.preprocess import preprocess

    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        yield np.stack([preprocess(_part(rng, defect), spec) for _ in range(min(chunk, n - start))])


def score(runner, seed: int, n: int, defect: bool) -> np.ndarray:
    """The exported model's normalised scores (fail at >= 0.5) of ``n`` new parts."""
    return np.concatenate([runner(x)[0] for x in new_parts(seed, n, defect, runner.spec)])


def coverage(val_raw: np.ndarray, test_raw: np.ndarray, size: int, sets: int, cfg, acfg) -> dict:
    """``sets`` disjoint validation sets of ``size`` good parts each choose a threshold; each
    threshold's false-reject rate on the test good parts against its reported bound."""
    from ..anomaly.bank import choose_threshold

    rows = []
    for i in range(sets):
        v = val_raw[i * size : (i + 1) * size]
        t = choose_threshold(v, np.zeros(0), cfg, acfg)
        f = t["confidence"]["false_reject_rate"]
        k = int(np.sum(test_raw >= t["raw"]))
        rows.append(
            {
                "set": i,
                "reported": {"k": f["k"], "n": f["n"], "upper": f["upper"]},
                "promise_held": t["promise"]["held"],
                "more_good_needed": t["promise"]["more_good_needed"],
                "measured": {"k": k, "n": len(test_raw), "rate": k / len(test_raw)},
                "within_upper_bound": k / len(test_raw) <= f["upper"],
            }
        )
    held = sum(r["within_upper_bound"] for r in rows)
    return {
        "validation_good": size,
        "sets": sets,
        "promise_held": sum(r["promise_held"] for r in rows),
        "within_upper_bound": held,
        "within_upper_bound_interval": bounds.interval(held, sets),
        "warning_of_the_first": None if not rows else _warning(val_raw[:size], cfg, acfg),
        "rows": rows,
    }


def _warning(v, cfg, acfg):
    from ..anomaly.bank import choose_threshold

    return choose_threshold(v, np.zeros(0), cfg, acfg)["warning"]


def bench(work: Path, seed: int = 7, sets: int = 10) -> dict:
    from ..anomaly.evaluate import AnomalyRunner

    t0 = time.monotonic()
    work = Path(work)
    data, run = work / "data", work / "run"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    write_fit_data(data, seed)
    kind = registry.get("anomaly")
    cfg, acfg = registry.configure(
        "anomaly", data, {"anomaly.coreset": 0.1, "model.image_size": SIZE}
    )
    info = kind.train(cfg, run, acfg)
    fit_seconds = time.monotonic() - t0
    manifest = kind.export(run, run / "model.onnx")
    runner = AnomalyRunner(run / "model.onnx")
    t = manifest["thresholds"]["anomaly"]
    raw_t = t["raw"]
    # new parts, from streams the fit never drew on
    good = score(runner, 1000 + seed, TEST_GOOD, False)
    bad = score(runner, 2000 + seed, TEST_DEFECT, True)
    pool = score(runner, 3000 + seed, sets * VAL_GOOD, False)
    truth = np.r_[np.zeros(len(good), bool), np.ones(len(bad), bool)]
    k_fr, k_esc = int(np.sum(good >= 0.5)), int(np.sum(bad < 0.5))
    measured = bounds.rate_block(k_fr, len(good))
    reported = t["confidence"]["false_reject_rate"]

    def raw(n):  # n = s / (s + t): back to the distance s
        return raw_t * n / (1.0 - n)

    logging.getLogger("training.anomaly.bank").setLevel(logging.ERROR)  # one warning per set
    cover = [
        coverage(raw(pool), raw(good), VAL_GOOD, sets, cfg, acfg),
        coverage(raw(pool), raw(good), SMALL_VAL, min(sets * VAL_GOOD // SMALL_VAL, 40), cfg, acfg),
    ]
    image_auroc = auroc(truth, np.r_[good, bad])
    within = measured["rate"] <= reported["upper"]
    return {
        "what": "the good-only anomaly model's threshold (false-reject rate <= 1 % at 95 %, "
        "chosen on the upper bound) measured on new generated parts (training.bench.anomalyfrr)",
        "command": "python -m training.bench.anomalyfrr --out docs/bench-anomaly-frr.json",
        "generator": {
            "parts": "training.bench.anomaly.textured_part / draw_defect",
            "size_px": SIZE,
            "seed": seed,
            "fit_good": FIT_GOOD,
            "validation_good": VAL_GOOD,
        },
        "model": {
            "backbone": cfg.model.type,
            "bank_size": manifest["anomaly"]["bank_size"],
            "fit_seconds": round(fit_seconds, 1),
            "parity": manifest["parity"],
        },
        "threshold": {
            "raw": raw_t,
            "policy": t["policy"],
            "target": t["target"],
            "confidence_level": t["confidence"]["level"],
            "false_reject_rate": reported,
            "promise": t["promise"],
            "warning": t["warning"],
            "in_run_json": info["threshold"]["confidence"]["false_reject_rate"],
        },
        "test": {
            "good": len(good),
            "defective": len(bad),
            "image_auroc": image_auroc,
            "false_reject_rate": measured,
            "escape_rate": bounds.rate_block(k_esc, len(bad)),
            "false_reject_within_reported_upper_bound": within,
        },
        "coverage_over_validation_sets": cover,
        "acceptance": {
            "image_auroc_at_least_0.99": image_auroc >= 0.99,
            "false_reject_rate_within_reported_upper_bound": within,
        },
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/bench-anomaly-frr.json"))
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inspector-bench-anomaly-frr",
        help="the generated parts and the run folder (replaced)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sets", type=int, default=10, help="validation sets for the coverage")
    args = p.parse_args(argv)
    r = bench(args.work, args.seed, args.sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    t, m = r["threshold"], r["test"]
    f = m["false_reject_rate"]
    print(
        f"image AUROC {m['image_auroc']:.4f} on {m['good']} new good and {m['defective']} new "
        f"defective parts; false-reject rate {f['k']} of {f['n']} = {f['rate']:.2%} against "
        f"the reported upper bound {t['false_reject_rate']['upper']:.2%} "
        f"({t['false_reject_rate']['k']} of {t['false_reject_rate']['n']} on validation)"
    )
    for c in r["coverage_over_validation_sets"]:
        print(
            f"{c['sets']} validation sets of {c['validation_good']} good parts: within the bound "
            f"in {c['within_upper_bound']}, promise held in {c['promise_held']}"
        )
    print(f"acceptance {r['acceptance']}; wrote {args.out} in {r['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
