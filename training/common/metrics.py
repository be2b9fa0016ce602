"""Classification metrics from scores, with numpy only (no TensorFlow needed).

``defect_score`` turns class probabilities into the one number the runtime's decision
compares: the highest defect-class probability (a part fails when any defect class
reaches the threshold, and every defect class shares the exported threshold).
"""

from __future__ import annotations

import numpy as np


def defect_score(probs: np.ndarray, classes: list[str], defects: list[str]) -> np.ndarray:
    idx = [classes.index(c) for c in defects]
    return probs[:, idx].max(axis=1)


def is_defect(y: np.ndarray, classes: list[str], defects: list[str]) -> np.ndarray:
    idx = np.array([classes.index(c) for c in defects])
    return np.isin(y, idx)


def roc_curve(truth: np.ndarray, score: np.ndarray):
    """False-positive rate, true-positive rate and thresholds (descending scores)."""
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order].astype(np.int64)
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[distinct]
    fp = (distinct + 1) - tp
    pos, neg = max(t.sum(), 1), max(len(t) - t.sum(), 1)
    fpr = np.r_[0.0, fp / neg]
    tpr = np.r_[0.0, tp / pos]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def auroc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class."""
    truth = truth.astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_curve(truth: np.ndarray, score: np.ndarray):
    """Precision, recall and thresholds (descending scores)."""
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order].astype(np.int64)
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[distinct]
    predicted = distinct + 1
    precision = tp / predicted
    recall = tp / max(t.sum(), 1)
    return precision, recall, s[distinct]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def binary_at(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Counts and rates of the pass/fail decision ``score >= threshold``."""
    truth = truth.astype(bool)
    fail = score >= threshold
    tp = int(np.sum(fail & truth))
    fn = int(np.sum(~fail & truth))
    fp = int(np.sum(fail & ~truth))
    tn = int(np.sum(~fail & ~truth))
    recall = tp / (tp + fn) if tp + fn else None
    precision = tp / (tp + fp) if tp + fp else None
    specificity = tn / (tn + fp) if tn + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "accuracy": (tp + tn) / len(truth) if len(truth) else None,
        "defect_recall": recall,
        "precision": precision,
        "f1": f1,
        "escape_rate": fn / (tp + fn) if tp + fn else None,
        "false_reject_rate": fp / (tn + fp) if tn + fp else None,
        "balanced_accuracy": (recall + specificity) / 2
        if recall is not None and specificity is not None
        else None,
    }


def report(
    probs: np.ndarray, y: np.ndarray, classes: list[str], defects: list[str], threshold: float
) -> dict:
    """Everything ``evaluate`` writes to metrics.json for one set of scores."""
    truth = is_defect(y, classes, defects)
    score = defect_score(probs, classes, defects)
    at = binary_at(truth, score, threshold)
    pred = probs.argmax(axis=1)
    # the class a part is reported as: the most likely good class when it passes,
    # the most likely defect class when it fails
    defect_idx = np.array([classes.index(c) for c in defects])
    good_idx = np.array([i for i in range(len(classes)) if i not in set(defect_idx)])
    fail = score >= threshold
    pred = np.where(
        fail,
        defect_idx[np.argmax(probs[:, defect_idx], axis=1)],
        good_idx[np.argmax(probs[:, good_idx], axis=1)],
    )
    cm = confusion(y, pred, len(classes))
    per_class = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        p = tp / predicted if predicted else None
        r = tp / support if support else None
        per_class[c] = {
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r)
            if p and r
            else 0.0
            if p is not None and r is not None
            else None,
            "support": support,
        }
    return {
        "images": int(len(y)),
        "threshold": float(threshold),
        "accuracy": at["accuracy"],
        "balanced_accuracy": at["balanced_accuracy"],
        "f1": at["f1"],
        "auroc": auroc(truth, score),
        "defect_recall": at["defect_recall"],
        "escape_rate": at["escape_rate"],
        "false_reject_rate": at["false_reject_rate"],
        "counts": {k: at[k] for k in ("tp", "fn", "fp", "tn")},
        "class_accuracy": float(np.mean(pred == y)) if len(y) else None,
        "confusion_matrix": {"classes": classes, "rows_true_cols_predicted": cm.tolist()},
        "per_class": per_class,
    }
