"""Evaluation reports (``inspector evaluate``: ``metrics.json``, ``predictions.csv``) and
their comparison: metrics with deltas, confusion matrices, the figures per value of a
manifest column, parts whose decision changed.

Nothing here recomputes a metric: the numbers are the ones ``evaluate`` wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "auroc",
    "defect_recall",
    "escape_rate",
    "false_reject_rate",
    "class_accuracy",
    "threshold",
    "images",
)
LOWER_IS_BETTER = {"escape_rate", "false_reject_rate"}


def find(roots: list[Path]) -> dict[str, Path]:
    """Report name (its path under its root, with the root's name) -> folder."""
    out = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for metrics in sorted(root.rglob("metrics.json")):
            folder = metrics.parent
            rel = folder.relative_to(root).as_posix()
            out[root.name if rel == "." else f"{root.name}/{rel}"] = folder
    return out


def load(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    predictions = {}
    try:
        with open(folder / "predictions.csv", newline="") as f:
            for row in csv.DictReader(f):
                predictions[row["file"]] = row
    except OSError:
        pass
    return {"metrics": metrics, "predictions": predictions}


def compare(a: dict, b: dict) -> dict:
    """B against A: each headline metric with its delta and whether it got better."""
    rows = []
    for key in HEADLINE:
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        better = None
        if delta and key not in ("threshold", "images"):
            better = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
        rows.append({"name": key, "a": va, "b": vb, "delta": delta, "better": better})
    changed = []
    for file in sorted(set(a["predictions"]) & set(b["predictions"])):
        pa, pb = a["predictions"][file], b["predictions"][file]
        if pa.get("result") == pb.get("result"):
            continue
        truth = "fail" if is_defect(pa.get("label", ""), a["metrics"]) else "pass"
        changed.append(
            {
                "file": file,
                "label": pa.get("label"),
                "a": pa.get("result"),
                "b": pb.get("result"),
                "score_a": pa.get("defect_score"),
                "score_b": pb.get("defect_score"),
                "change": "fixed" if pb.get("result") == truth else "broke",
            }
        )
    return {
        "metrics": rows,
        "confusion": [_confusion(a["metrics"]), _confusion(b["metrics"])],
        "by_column": by_column(a, b),
        "changed": changed,
        "fixed": sum(c["change"] == "fixed" for c in changed),
        "broke": sum(c["change"] == "broke" for c in changed),
        "only_a": len(set(a["predictions"]) - set(b["predictions"])),
        "only_b": len(set(b["predictions"]) - set(a["predictions"])),
    }


def by_column(a: dict, b: dict) -> list[dict]:
    """The figures ``evaluate`` split by a manifest column (``by_column``: ELPV's label
    confidence, a plant's lot or shift), A and B side by side per value: escapes and false
    rejects at each report's threshold, and how well the value's defects are told from every
    good part. A column only one report has is shown with the other's cells empty."""
    ga, gb = _columns(a["metrics"]), _columns(b["metrics"])
    out = []
    for column in dict.fromkeys([*ga, *gb]):
        va, vb = ga.get(column, {}), gb.get(column, {})
        rows = []
        for value in sorted(set(va) | set(vb)):
            ca, cb = _group(va.get(value)), _group(vb.get(value))
            ra, rb = ca["escape_rate"], cb["escape_rate"]
            rows.append(
                {
                    "value": value,
                    "counts": ca["counts"] if ca["counts"] != "–" else cb["counts"],
                    "a": ca,
                    "b": cb,
                    "better": None if ra is None or rb is None or ra == rb else rb < ra,
                }
            )
        out.append({"column": column, "rows": rows, "note": COLUMN_NOTES.get(column)})
    return out


# what the columns of the workbench's own dataset mean (the review sidecars' metadata)
COLUMN_NOTES = {
    "line_result": "What the line said of each labelled part: the defects in the pass row are "
    "the line's escapes, so a model's escapes there are the ones it would still let through; "
    "the good parts in the fail row are the line's false rejects.",
    "day": "The day each labelled part was triggered on the line (the workbench's local "
    "date): a model that loses on one day points at what changed on the line that day.",
}


def _columns(metrics: dict) -> dict[str, dict]:
    by = metrics.get("by_column")
    if not isinstance(by, dict):
        return {}
    return {
        str(c): {str(v): g for v, g in values.items() if isinstance(g, dict)}
        for c, values in by.items()
        if isinstance(values, dict)
    }


def _group(g: dict | None) -> dict:
    """One report's cells for one value (dashes where it has none)."""
    if g is None:
        return {"counts": "–", "esc": "–", "fr": "–", "auroc": "–", "escape_rate": None}

    def rate(block) -> tuple[str, float | None]:
        if not isinstance(block, dict) or not block.get("n"):
            return "–", None
        k, n = block.get("k", 0), block["n"]
        upper = block.get("upper")
        bound = f", ≤ {100 * upper:.1f} %" if isinstance(upper, (int, float)) else ""
        return f"{k} of {n} ({100 * k / n:.1f} %{bound})", k / n

    esc, esc_rate = rate(g.get("escape_rate"))
    fr, _ = rate(g.get("false_reject_rate"))
    auc = g.get("auroc_vs_all_good")
    return {
        "counts": f"{g.get('defective', 0)} defective, {g.get('good', 0)} good",
        "esc": esc,
        "fr": fr,
        "auroc": f"{auc:.4f}" if isinstance(auc, (int, float)) else "–",
        "escape_rate": esc_rate,
    }


def is_defect(label: str, metrics: dict) -> bool:
    per = metrics.get("per_class") or {}
    defects = metrics.get("defect_classes")
    if defects is None and isinstance(per, dict):
        defects = [c for c, v in per.items() if isinstance(v, dict) and v.get("defect")]
    if defects:
        return label in defects
    return label.lower() not in ("good", "ok", "pass", "normal")


def _confusion(metrics: dict) -> dict:
    cm = metrics.get("confusion_matrix") or {}
    return {"classes": cm.get("classes", []), "rows": cm.get("rows_true_cols_predicted", [])}
