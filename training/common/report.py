"""The evaluation report: one HTML page with PNG plots, readable without a server.

ROC and precision-recall curves with the operating point marked, score histograms per
class with the threshold, the confusion matrix, per-class precision/recall/F1, and
galleries of false passes (escapes: defects that passed) and false rejects.
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from .metrics import pr_curve, roc_curve


def write_report(out: Path, metrics: dict, truth, score, threshold, images, classes, gallery):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    at = metrics

    fig, ax = plt.subplots(figsize=(4.5, 4))
    if truth.any() and (~truth).any():
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, lw=2)
        ax.plot([at["false_reject_rate"]], [at["defect_recall"]], "ro", label="operating point")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        xlabel="false reject rate", ylabel="defect recall", title=f"ROC (AUROC {_f(at['auroc'])})"
    )
    _save(fig, plots / "roc.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    if truth.any():
        precision, recall, _ = pr_curve(truth, score)
        ax.plot(recall, precision, lw=2)
        if at["defect_recall"] is not None and metrics["counts"]["tp"] + metrics["counts"]["fp"]:
            p = metrics["counts"]["tp"] / (metrics["counts"]["tp"] + metrics["counts"]["fp"])
            ax.plot([at["defect_recall"]], [p], "ro", label="operating point")
            ax.legend(loc="lower left")
    ax.set(xlabel="defect recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    _save(fig, plots / "pr.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for i, c in enumerate(classes):
        sel = images.y == i
        if sel.any():
            ax.hist(score[sel], bins=bins, alpha=0.6, label=f"{c} ({int(sel.sum())})")
    ax.axvline(threshold, color="r", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="defect score", ylabel="images", title="scores per true class", yscale="log")
    ax.legend()
    _save(fig, plots / "scores.png")

    escapes = np.flatnonzero(truth & (score < threshold))
    rejects = np.flatnonzero(~truth & (score >= threshold))
    # the worst first: escapes with the lowest scores, rejects with the highest
    escapes = escapes[np.argsort(score[escapes])][:gallery]
    rejects = rejects[np.argsort(-score[rejects])][:gallery]
    galleries = {
        "False passes (defects that passed)": _gallery(plots, "escape", escapes, images, score),
        "False rejects (good parts that failed)": _gallery(plots, "reject", rejects, images, score),
    }
    (out / "report.html").write_text(_page(metrics, classes, galleries))


def _gallery(plots: Path, tag: str, idx, images, score) -> list[tuple[str, str]]:
    items = []
    for k, i in enumerate(idx):
        name = f"{tag}_{k:02d}.png"
        x = images.x[i]
        cv2.imwrite(str(plots / name), x if x.shape[2] != 3 else x)
        items.append((f"plots/{name}", f"{Path(images.files[i]).name} score {score[i]:.3f}"))
    return items


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _f(v, digits=4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _by_column(column: str, values: dict) -> str:
    """One manifest column's groups: counts, AUROCs and the rates at the threshold."""
    e = html.escape

    def rate(block) -> str:
        if not block or block["rate"] is None:
            return "&ndash;"
        return f"{block['k']}/{block['n']} ({block['rate']:.1%}, &le; {block['upper']:.1%})"

    rows = "".join(
        f"<tr><td>{e(v)}</td><td>{g['defective']}</td><td>{g['good']}</td>"
        f"<td>{_f(g['auroc'])}</td><td>{_f(g['auroc_vs_all_good'])}</td>"
        f"<td>{_f(g['auroc_vs_all_defective'])}</td><td>{rate(g.get('escape_rate'))}</td>"
        f"<td>{rate(g.get('false_reject_rate'))}</td></tr>"
        for v, g in values.items()
    )
    return (
        f"<h2>By {e(column)}</h2><table><tr><th>{e(column)}</th><th>defective</th>"
        "<th>good</th><th>AUROC</th><th>AUROC, its defects vs all good</th>"
        "<th>AUROC, its good vs all defects</th><th>escapes (bound)</th>"
        f"<th>false rejects (bound)</th></tr>{rows}</table>"
    )


def _page(m: dict, classes: list[str], galleries: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(k)}</td><td>{_f(m[k])}</td></tr>"
        for k in (
            "accuracy",
            "balanced_accuracy",
            "f1",
            "auroc",
            "defect_recall",
            "escape_rate",
            "false_reject_rate",
        )
    )
    cm = m["confusion_matrix"]["rows_true_cols_predicted"]
    head = "".join(f"<th>{e(c)}</th>" for c in classes)
    body = "".join(
        f"<tr><th>{e(c)}</th>" + "".join(f"<td>{v}</td>" for v in cm[i]) + "</tr>"
        for i, c in enumerate(classes)
    )
    per = "".join(
        f"<tr><td>{e(c)}</td><td>{_f(v['precision'])}</td><td>{_f(v['recall'])}</td>"
        f"<td>{_f(v['f1'])}</td><td>{v['support']}</td></tr>"
        for c, v in m["per_class"].items()
    )
    by = "".join(_by_column(c, values) for c, values in (m.get("by_column") or {}).items())
    gal = ""
    for title, items in galleries.items():
        figs = (
            "".join(
                f'<figure><img src="{e(src)}" width="128"><figcaption>{e(cap)}</figcaption></figure>'
                for src, cap in items
            )
            or "<p>none</p>"
        )
        gal += f"<h2>{e(title)}</h2><div class='g'>{figs}</div>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {e(str(m["model"]))}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.g{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;font-size:80%}}</style></head>
<body>
<h1>Evaluation report</h1>
<p>Model: {e(str(m["model"]))}<br>Data: {e(str(m["data"]))} (split: {e(m["split"])}),
{m["images"]} images, {len(m["unreadable"])} unreadable skipped.<br>
Operating point: a part fails when its defect score &ge; {m["threshold"]:.4f}.</p>
<table>{rows}</table>
<h2>Confusion matrix (rows: true, columns: reported)</h2>
<table><tr><th></th>{head}</tr>{body}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per}</table>
{by}
<h2>Curves</h2>
<img src="plots/roc.png"> <img src="plots/pr.png"><br><img src="plots/scores.png">
{gal}
</body></html>
"""
