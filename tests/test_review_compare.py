"""Compare's operating-point slider: escapes against false rejects at each threshold, on
both reports' images and on the recorded parts (what that threshold would have done)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from .review_helpers import workbench
from .test_review import client_as, ids

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


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
