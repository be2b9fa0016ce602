"""``python -m training.bench.fusion``: does the anomaly model add to the classifier?

Reads ``inspector evaluate`` predictions (``predictions.csv``) of a classifier and of an
anomaly model on the same validation and test images, fits a logistic fusion of their
log-odds on validation only (two weights and a bias, mild L2), and reports image AUROC of the
classifier, the anomaly model and the fused score on test, each used once. Beside it, the
line's own rule (fail when either fails, at each model's own threshold): escapes and false
rejects on test with exact bounds.

Example (ELPV, ``docs/bench-fusion-elpv.json``)::

    inspector evaluate elpv.onnx --data elpv --split val --run runs/elpv --out cv
    inspector evaluate elpv.onnx --data elpv --split test --run runs/elpv --out ct
    inspector evaluate a/model.onnx --data elpv --split val --run a --out av   # likewise test
    python -m training.bench.fusion --classifier cv ct --anomaly av at --out fusion.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ..common import bounds
from ..common.metrics import auroc


def _read(folder: Path) -> dict[str, tuple[float, bool, bool]]:
    """{label/name: (score, is_defect, failed)} of one predictions.csv."""
    out = {}
    with (Path(folder) / "predictions.csv").open() as f:
        for r in csv.DictReader(f):
            score = float(r.get("defect_score") or r["anomaly_score"])
            key = "/".join(Path(r["file"]).parts[-2:])
            out[key] = (
                score,
                r["label"] not in ("good", "ok", "pass", "normal"),
                r["result"] == "fail",
            )
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _pair(cls_dir: Path, an_dir: Path):
    c, a = _read(cls_dir), _read(an_dir)
    if set(c) != set(a):
        raise SystemExit(f"{cls_dir} and {an_dir} hold different images ({len(c)} vs {len(a)})")
    keys = sorted(c)
    y = np.array([c[k][1] for k in keys])
    x = np.stack(
        [_logit(np.array([c[k][0] for k in keys])), _logit(np.array([a[k][0] for k in keys]))], 1
    )
    failed = np.array([c[k][2] or a[k][2] for k in keys])
    return x, y, failed


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2):
    """(mean, sd, weights): standardised features, Newton's method."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    reg = l2 * np.diag([1.0] * (z.shape[1] - 1) + [0.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        step = np.linalg.solve(z.T @ (z * (p * (1 - p))[:, None]) + reg, z.T @ (p - y) + reg @ w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return mu, sd, w


def bench(cls_val: Path, cls_test: Path, an_val: Path, an_test: Path) -> dict:
    xv, yv, _ = _pair(cls_val, an_val)
    xt, yt, failed = _pair(cls_test, an_test)
    mu, sd, w = fit_logistic(xv, yv)

    def fused(x):
        return np.c_[(x - mu) / sd, np.ones(len(x))] @ w

    def rate(k, n):
        return bounds.rate_block(int(k), int(n))

    def figures(x, y):
        aurocs = {"classifier": auroc(y, x[:, 0]), "anomaly": auroc(y, x[:, 1])}
        aurocs["fused"] = auroc(y, fused(x))
        return {"images": int(len(y)), "defective": int(y.sum()), "auroc": aurocs}

    return {
        "inputs": {
            "classifier": [str(cls_val), str(cls_test)],
            "anomaly": [str(an_val), str(an_test)],
        },
        "protocol": "logistic fusion of the two models' log-odds fitted on validation only; "
        "test used once",
        "validation": figures(xv, yv),
        "weights": {"classifier": float(w[0] / sd[0]), "anomaly": float(w[1] / sd[1])},
        "test": {
            **figures(xt, yt),
            "either_fails": {
                "escape_rate": rate(np.sum(yt & ~failed), yt.sum()),
                "false_reject_rate": rate(np.sum(~yt & failed), (~yt).sum()),
            },
        },
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench.fusion")
    ap.add_argument("--classifier", nargs=2, type=Path, required=True, metavar=("VAL", "TEST"))
    ap.add_argument("--anomaly", nargs=2, type=Path, required=True, metavar=("VAL", "TEST"))
    ap.add_argument("--out", type=Path, default=Path("bench-fusion.json"))
    args = ap.parse_args(argv)
    r = bench(*args.classifier, *args.anomaly)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    t = r["test"]["auroc"]
    e = r["test"]["either_fails"]
    print(
        f"test AUROC: classifier {t['classifier']:.4f}, anomaly {t['anomaly']:.4f}, fused "
        f"{t['fused']:.4f}; either fails: escapes {e['escape_rate']['k']}/"
        f"{e['escape_rate']['n']}, false rejects {e['false_reject_rate']['k']}/"
        f"{e['false_reject_rate']['n']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
