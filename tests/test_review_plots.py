"""Charts drawn by the server: the loss while a run trains, ROC and precision-recall on
compare (from the reports' predictions)."""

from __future__ import annotations

import re

import pytest

from inspector.review.figures.plots import roc_pr

from .review_helpers import client_as, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def test_roc_and_pr_points_follow_the_scores():
    preds = {f: {"label": lb, "defect_score": s}
             for f, lb, s in (("a", "scratch", "0.9"), ("b", "good", "0.6"),
                              ("c", "scratch", "0.4"), ("d", "good", "0.1"))}  # fmt: skip
    roc, pr = roc_pr(preds, lambda lb: lb != "good")
    assert roc == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert pr == [(0.5, 1), (0.5, 0.5), (1, pytest.approx(2 / 3)), (1, 0.5)]
    assert roc_pr({"a": {"label": "good", "defect_score": "0.2"}}, lambda lb: False) == ([], [])


def points(svg: str, cls: str) -> list[tuple[float, float]]:
    got = re.search(rf'<polyline points="([^"]+)" class="line {cls}"', svg).group(1)
    return [tuple(map(float, p.split(","))) for p in got.split()]


def test_compare_draws_roc_and_pr_for_both_reports(tmp_path):
    _cfg, app = workbench(tmp_path)
    c, _ = client_as(app, "viewer")
    html = c.get("/compare?a=reports/a&b=reports/b").text
    roc = re.search(r'<svg[^>]*aria-label="ROC">.*?</svg>', html, re.S).group(0)
    a, b = points(roc, "s1"), points(roc, "s2")
    assert len(a) >= 2 and len(b) >= 2 and a != b
    xs = [x for x, _ in a]
    assert xs == sorted(xs), "from the strictest threshold to the most lenient"
    assert "A reports/a" in html and "B reports/b" in html
    assert re.search(r'<svg[^>]*aria-label="Precision-recall">', html)


def test_a_run_shows_its_loss_per_epoch(tmp_path):
    _cfg, app = workbench(tmp_path)
    c, _ = client_as(app, "viewer")
    out = tmp_path / "runs" / "r1"
    out.mkdir(parents=True)
    (out / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,1.2\n1,0.5,0.8\n2,0.25,0.7\n")
    store = app.state.bench.store
    rid = store.add_run("r1", str(out), "reviewer", 3)
    store.set_run(rid, status="done")
    block = c.get(f"/train/{rid}", headers={"HX-Request": "1"}).text
    loss, val = points(block, "s1"), points(block, "s2")
    assert len(loss) == len(val) == 3
    assert [x for x, _ in loss] == sorted(x for x, _ in loss)
    assert loss[0][1] < loss[1][1] < loss[2][1], "the loss falls: its line goes down the box"
    assert "validation loss" in block


def test_a_curve_of_one_point_is_still_drawn():
    from inspector.review.figures.plots import chart

    c = chart([{"name": "A", "cls": "s1", "points": [(1.0, 0.5)]}], "x", "y", (0, 1), (0, 1))
    [line] = c["lines"]
    assert len(line["dots"]) == 1 and line["dots"][0][0] == c["right"]
