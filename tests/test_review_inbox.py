"""The review workbench's inbox: its filters, sorts and pages, and the thumbnails it shows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .review_helpers import client_as, total

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def rows(html: str) -> int:
    return html.count('<tr class="part ')


def test_inbox_filters_sorts_and_pages(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/")
    assert total(r.text) == 40 and rows(r.text) == 20 and "page 1 of 2" in r.text
    assert rows(c.get("/?page=2").text) == 20
    assert total(c.get("/?station=line2").text) == 10
    assert total(c.get("/?station=line1").text) == 30
    uncertain = c.get("/?station=line1&reason=uncertain").text
    assert total(uncertain) == 4  # i % 5 == 4 among the failed of 30
    assert total(c.get("/?station=line1&reason=defect").text) == 16
    by_score = c.get("/?station=line1&sort=score").text
    scores = [float(s) for s in _column(by_score, 9)]
    assert scores == sorted(scores, reverse=True)
    assert all(
        0.4 <= s <= 0.6 for s in map(float, _column(c.get("/?score_min=0.4&score_max=0.6").text, 9))
    )
    assert total(c.get("/?station=line1&model=demo%401").text) == 15
    # line1's parts are a minute apart from 2026-11-30T00:53:20Z (review_helpers.T0):
    # 01:00 to 01:10 holds parts 7..16, the day before holds none
    window = c.get("/?station=line1&since=2026-11-30T01:00&until=2026-11-30T01:10&sort=time_asc")
    assert total(window.text) == 10
    want = ["../../etc/passwd"] + [f"P-0-{i:04d}" for i in range(8, 17)]  # part 7's id is hostile
    assert _column(window.text, 4) == want
    assert total(c.get("/?station=line1&since=2026-11-29&until=2026-11-30").text) == 0
    assert total(c.get("/?station=line1&until=2026-11-30T01:00").text) == 7  # parts 0..6
    assert total(c.get("/?station=line1&since=2026-11-30T01:00").text) == 23
    assert total(c.get("/?reviewed=yes").text) == 0
    assert total(c.get("/?reviewed=no").text) == 40
    assert "server-timing" in r.headers


def _column(html: str, n: int) -> list[str]:
    import re

    out = []
    for row in re.findall(r'<tr class="part [^"]*"[^>]*>(.*?)</tr>', html, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        out.append(re.sub(r"<[^>]+>", "", cells[n - 1]).strip())
    return out


def test_thumbnails_are_made_once(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/thumb/3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    (made,) = list(Path(cfg.cache).rglob("*.jpg"))
    stamp = made.stat().st_mtime_ns
    time.sleep(0.01)
    assert c.get("/thumb/3").content == r.content and made.stat().st_mtime_ns == stamp
    assert c.get("/thumb/999").status_code == 404
