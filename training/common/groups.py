"""The figures per value of a manifest column: where a model loses.

A manifest's extra columns (ELPV's ``probability``, the annotators' confidence that a cell is
defective, and ``cell_type``; a plant's line, supplier or shift) split one AUROC into the
groups it hides. For each value of a column this gives, on the images carrying it:

- ``auroc``: the group's defective images against the group's good ones;
- ``auroc_vs_all_good``: the group's defective images against every good image: how well
  this kind of defect is told from good parts;
- ``auroc_vs_all_defective``: the group's good images against every defective image: how
  often this kind of good part looks like a defect;
- with a threshold, the group's escape and false-reject rates with their exact bounds.

On ELPV the good-only model tells the defects the annotators were sure of from good cells at
0.94 and the ones they marked uncertain at 0.74 (``python -m training.bench.anomalycv``)::

    by_columns(truth, score, meta)["probability"]["1.0000"]["auroc_vs_all_good"]
"""

from __future__ import annotations

import numpy as np

from .. import TrainingError
from .metrics import auroc
from .thresholds import confidence_at

MAX_VALUES = 12  # a column with more distinct values (file names, serials) is no grouping


def groupable(meta: list[dict[str, str]]) -> list[str]:
    """The columns every image carries with between 2 and ``MAX_VALUES`` distinct values."""
    if not meta:
        return []
    columns = [c for c in meta[0] if all(c in m for m in meta)]
    return [c for c in columns if 2 <= len({m[c] for m in meta}) <= MAX_VALUES]


def by_group(
    truth: np.ndarray,
    score: np.ndarray,
    values: list[str],
    threshold: float | None = None,
    confidence: float = 0.95,
) -> dict[str, dict]:
    """Per distinct value: the counts, the three AUROCs (None where a side is empty) and,
    with a threshold, the escape and false-reject rates with their bounds."""
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    values = np.asarray(values, dtype=object)
    if not (len(truth) == len(score) == len(values)):
        raise ValueError(f"{len(truth)} labels, {len(score)} scores, {len(values)} group values")
    out = {}
    for v in sorted(set(values.tolist())):
        sel = values == v
        bad, good = sel & truth, sel & ~truth
        entry = {
            "images": int(sel.sum()),
            "defective": int(bad.sum()),
            "good": int(good.sum()),
            "auroc": auroc(truth[sel], score[sel]),
            "auroc_vs_all_good": auroc(truth[bad | ~truth], score[bad | ~truth]),
            "auroc_vs_all_defective": auroc(truth[good | truth], score[good | truth]),
        }
        if threshold is not None:  # the operating point's rates, as evaluate reports them
            at = confidence_at(truth[sel], score[sel], threshold, confidence)
            entry["escape_rate"], entry["false_reject_rate"] = (
                at["escape_rate"],
                at["false_reject_rate"],
            )
        out[str(v)] = entry
    return out


def by_columns(
    truth: np.ndarray,
    score: np.ndarray,
    meta: list[dict[str, str]],
    threshold: float | None = None,
    columns: list[str] | None = None,
    data=None,
) -> dict[str, dict[str, dict]]:
    """``by_group`` for each of ``columns`` (default: every ``groupable`` one). A column
    asked for that some image lacks is a TrainingError naming the columns there are
    (``data``: the dataset, for the message)."""
    if len(meta) != len(truth):
        raise ValueError(f"{len(truth)} images but {len(meta)} metadata rows")
    columns = groupable(meta) if columns is None else columns
    missing = [c for c in columns if not all(c in m for m in meta)]
    if missing:
        have = sorted({c for m in meta for c in m})
        where = f"{data}: " if data is not None else ""
        raise TrainingError(
            f"{where}not every image has the column(s) {missing} to split the figures by "
            f"(the manifest's columns: {have or 'none besides path, label and split'})"
        )
    return {c: by_group(truth, score, [m[c] for m in meta], threshold) for c in columns}


def mean_over(runs: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    """The AUROCs of several ``by_columns`` results (folds, seeds) averaged group by group,
    with ``runs``, how many results had the group. Counts are left to the caller: folds
    share their defective images, so a sum would count them once per fold. An AUROC that is
    None in one run is left out of that group's mean."""
    out: dict[str, dict[str, dict]] = {}
    for column in dict.fromkeys(c for r in runs for c in r):
        out[column] = {}
        for g in dict.fromkeys(g for r in runs for g in r.get(column, {})):
            entries = [r[column][g] for r in runs if g in r.get(column, {})]
            merged = {}
            for k in ("auroc", "auroc_vs_all_good", "auroc_vs_all_defective"):
                got = [e[k] for e in entries if e[k] is not None]
                merged[k] = round(float(np.mean(got)), 4) if got else None
            merged["runs"] = len(entries)
            out[column][g] = merged
    return out
