"""Compare: two reports side by side (what B fixed and what it broke), and the
operating-point slider: escapes against false rejects at each threshold, on both reports'
images and on the recorded parts (what that threshold would have done)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from .review_helpers import client_as, ids, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def test_compare_two_reports(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    page = c.get("/compare").text
    assert "reports/a" in page and "reports/b" in page
    r = c.get("/compare?a=reports/a&b=reports/b")
    assert r.status_code == 200
    fixed, broke = r.text.count('<tr class="fixed">'), r.text.count('<tr class="broke">')
    assert fixed and broke and f"fixed {fixed}, broke {broke}" in r.text
    assert r.text.count("<caption>") == 2 and "/media/dataset/" in r.text
    link = r.text.split('href="/media/dataset/')[1].split('"')[0]
    assert c.get("/media/dataset/" + link).status_code == 200
    assert c.get("/compare?a=reports/a&b=nope").status_code == 404


def cells(html: str) -> dict[str, str]:
    return dict(re.findall(r'<td id="op-(\w+)">([^<]*)</td>', html))


def counted(report: Path, t: float) -> tuple[str, str]:
    rows = list(csv.DictReader((report / "predictions.csv").read_text().splitlines()))
    bad = [float(r["defect_score"]) for r in rows if r["label"] != "good"]
    good = [float(r["defect_score"]) for r in rows if r["label"] == "good"]
    esc, fr = sum(s < t for s in bad), sum(s >= t for s in good)
    return (f"{esc} of {len(bad)} ({100 * esc / len(bad):.1f} %)",
            f"{fr} of {len(good)} ({100 * fr / len(good):.1f} %)")  # fmt: skip


def test_the_slider_shows_what_each_threshold_trades(tmp_path):
    _cfg, app = workbench(tmp_path)
    c, token = client_as(app, "reviewer")
    p = ids(app)
    # people label two recorded parts: a failed one good, a passed one a scratch
    c.post(f"/part/{p['P-0-0002']['id']}/label", data={"label": "good", "csrf": token})
    c.post(f"/part/{p['P-0-0003']['id']}/label", data={"label": "scratch", "csrf": token})
    html = c.get("/compare?a=reports/a&b=reports/b").text
    slider = re.search(r'<input type="range" name="i" id="op" min="0" max="(\d+)"[^>]*'
                       r'value="(\d+)"', html)  # fmt: skip
    assert slider and re.search(r'<output id="op-t">0.500</output>', html), "at A's threshold"
    got = cells(html)
    assert (got["a_esc"], got["a_fr"]) == counted(tmp_path / "reports" / "a", 0.5)
    assert (got["b_esc"], got["b_fr"]) == counted(tmp_path / "reports" / "b", 0.5)
    # the recorded parts at 0.5: those the line model scored at 0.5 or more are rejected
    scores = [r["score"] for r in app.state.bench.store.scored_parts()]
    rejected = sum(s >= 0.5 for s in scores)
    assert got["r_rej"] == f"{rejected} of {len(scores)} ({100 * rejected / len(scores):.1f} %)"
    s2, s3 = p["P-0-0002"]["score"], p["P-0-0003"]["score"]
    assert got["r_fr"].startswith(f"{int(s2 >= 0.5)} of 1 ")
    assert got["r_esc"].startswith(f"{int(s3 < 0.5)} of 1 ")
    # the lowest threshold fails every image: no escapes, every good image a false reject
    low = cells(c.get("/compare?a=reports/a&b=reports/b&i=0").text)
    assert (
        low["a_esc"].startswith("0 of ")
        and low["a_fr"] == counted(tmp_path / "reports" / "a", 0.0125)[1]
    )
    assert low["a_fr"].split(" of ")[0] == low["a_fr"].split(" of ")[1].split(" ")[0]
    # every point travels with the page for the slider's script
    points = re.search(r'data-points="([^"]+)"', html).group(1)
    assert points.count("&#34;t&#34;") == int(slider.group(1)) + 1


def test_compare_shows_each_reports_escapes_per_value_of_a_manifest_column(tmp_path):
    """``evaluate``'s figures per manifest column (here: which of two lots a part came from)
    side by side: where B lets fewer defects through and where it lets more."""
    from training.common.groups import by_columns

    _cfg, app = workbench(tmp_path)
    lots = {}
    for name in ("a", "b"):
        report = tmp_path / "reports" / name
        rows = list(csv.DictReader((report / "predictions.csv").read_text().splitlines()))
        lots[name] = [{"lot": "L1" if i < len(rows) // 2 else "L2"} for i in range(len(rows))]
        truth = np.array([r["label"] != "good" for r in rows])
        score = np.array([float(r["defect_score"]) for r in rows])
        m = json.loads((report / "metrics.json").read_text())
        m["by_column"] = by_columns(truth, score, lots[name], threshold=0.5)
        (report / "metrics.json").write_text(json.dumps(m))
    c, _ = client_as(app, "viewer")
    html = c.get("/compare?a=reports/a&b=reports/b").text
    assert '<h2 id="by-lot">By lot' in html
    table = html.split('<h2 id="by-lot">')[1].split("</table>")[0]
    got = re.findall(
        r"<tr><td>(L\d)</td><td>([^<]*)</td><td>([^<]*)</td><td[^>]*>([^<]*)</td>", table
    )
    assert [g[0] for g in got] == ["L1", "L2"]
    for lot, counts, a_esc, b_esc in got:
        for name, shown in (("a", a_esc), ("b", b_esc)):
            rows = list(csv.DictReader((tmp_path / "reports" / name / "predictions.csv").open()))
            bad = [
                r
                for r, m in zip(rows, lots[name], strict=True)
                if m["lot"] == lot and r["label"] != "good"
            ]
            esc = sum(r["result"] == "pass" for r in bad)
            assert shown.startswith(f"{esc} of {len(bad)} ("), (lot, name, shown)
        assert counts.startswith(f"{len(bad)} defective")
    # a report without the column: its cells say so, the page still renders
    m = json.loads((tmp_path / "reports" / "a" / "metrics.json").read_text())
    m["by_column"] = {"lot": "not a table"}
    (tmp_path / "reports" / "a" / "metrics.json").write_text(json.dumps(m))
    r = c.get("/compare?a=reports/a&b=reports/b")
    assert r.status_code == 200 and "<td>–</td>" in r.text.split('<h2 id="by-lot">')[1]
