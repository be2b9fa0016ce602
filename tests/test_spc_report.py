"""The SPC report as a QA engineer reads it: charts whose legend hides no point, time ticks
that say different times, rate axes in %, and signals written as sentences (issue 27)."""

from __future__ import annotations

import html
import re
import time
from dataclasses import replace

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from inspector.spc.config import ChartsSection
from inspector.spc.report import write_report
from inspector.spc.store import Store

from .spc_helpers import rows, verdict_row

T0 = 1_780_000_000.0  # a weekday in 2026; every verdict 0.1 s after the one before


def exact_rows(station, rejects, n=200, t0=T0):
    """Subgroups of ``n`` parts with exactly ``rejects[i]`` rejects in subgroup ``i``."""
    out = []
    for g, k in enumerate(rejects):
        for i in range(n):
            out.append(verdict_row(station, g * n + i, i < k, t0))
    return out


@pytest.fixture
def saved(monkeypatch):
    """Every figure the report saves, by file name (the figures stay readable once closed)."""
    figures = {}
    real = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        real(fig, fname, *args, **kwargs)
        figures[str(fname).rsplit("/", 1)[-1]] = fig

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def report(tmp_path, verdicts, cfg=None, alarms=()):
    store = Store(tmp_path / "spc.sqlite")
    store.add_verdicts(verdicts)
    for a in alarms:
        store.open_alarm(*a)
    store.close()
    page = write_report(
        tmp_path / "spc.sqlite", tmp_path / "report", 0, 1e12, cfg or ChartsSection()
    )
    return page.read_text(encoding="utf-8")


def tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


# Spans a line sees: the demo (subgroups of 20 parts at 30 a second), a few minutes, a shift.
SPANS = {
    "demo, 8 s": dict(n=20, per_s=30, subgroups=12),
    "4 minutes": dict(n=200, per_s=10, subgroups=12),
    "a shift": dict(n=200, per_s=1, subgroups=144),
}


@pytest.mark.parametrize("span", SPANS)
def test_time_ticks_say_different_times(tmp_path, saved, span):
    s = SPANS[span]
    verdicts = rows("s1", [0.05] * s["subgroups"], n=s["n"], seed=5, t0=T0)
    verdicts = [replace(v, t_verdict=T0 + v.seq / s["per_s"]) for v in verdicts]
    report(tmp_path, verdicts, ChartsSection(subgroup_parts=s["n"], baseline_subgroups=5))
    for name in ("s1-reject.png", "s1-health.png"):
        labels = tick_labels(saved[name].axes[-1])
        assert len(labels) >= 3, (name, labels)
        assert len(set(labels)) == len(labels), f"{name}: a time tick repeats: {labels}"


def _overlaps(bbox, fig) -> list:
    """The plotted points (lines with markers) of every chart in ``fig`` inside ``bbox``."""
    inside = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " ") or not line.get_visible():
                continue
            for x, y in ax.transData.transform(line.get_xydata()):
                if bbox.x0 <= x <= bbox.x1 and bbox.y0 <= y <= bbox.y1:
                    inside.append((line.get_label(), round(x), round(y)))
    return inside


@pytest.mark.parametrize(
    "rates",
    [
        [0.02] * 30 + [0.06] * 10,  # a shift at the end
        [0.02] * 2 + [0.10] + [0.02] * 37,  # one bad subgroup early (top left)
    ],
    ids=["shift-late", "spike-early"],
)
def test_the_legend_covers_no_point_and_stays_on_the_picture(tmp_path, saved, rates):
    report(tmp_path, rows("s1", rates, seed=5), ChartsSection(baseline_subgroups=20))
    fig = saved["s1-reject.png"]
    canvas = FigureCanvasAgg(fig)  # draw it again as it was saved (closed figures lose theirs)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends, "the chart has a legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not _overlaps(box, fig), f"the legend covers {_overlaps(box, fig)}"
        page = fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 <= box.y1 <= page.y1
        names = {fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)} - {""}
        for title in (t for t in fig.findobj(Text) if t.get_text() in names):
            extent = title.get_window_extent(renderer)
            assert not box.overlaps(extent), f"the legend covers the title {title.get_text()}"


def test_rate_axes_and_the_ewma_read_in_percent(tmp_path, saved):
    report(
        tmp_path,
        rows("s1", [0.02] * 30 + [0.06] * 10, seed=5),
        ChartsSection(baseline_subgroups=20),
    )
    fig = saved["s1-reject.png"]
    rate_ax, ewma_ax = fig.axes[0], fig.axes[1]
    for ax in (rate_ax, ewma_ax):
        assert "%" in ax.get_ylabel(), ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and all(lb.rstrip().endswith("%") for lb in labels), labels
    # the EWMA watches the reject rate: over the 2 % baseline it reads about 2 %, not about 0
    ewma = ewma_ax.get_lines()[0].get_ydata()[:20]
    assert all(1.0 < v < 3.5 for v in ewma), list(ewma)


def test_signals_and_alarms_are_sentences_not_python_dicts(tmp_path, saved):
    # 30 subgroups at exactly 2 %, then one at 9.5 % (19 of 200), then 2 % again
    rejects = [4] * 30 + [19] + [4] * 9
    spike = T0 + 30 * 20 + 9.95  # the 9.5 % subgroup's time (mean of its parts)
    alarm = ("s1", "reject", "we1_beyond_3s", spike, '{"value": 5.5, "limit": 3.0}')
    page = report(
        tmp_path, exact_rows("s1", rejects), ChartsSection(baseline_subgroups=20), [alarm]
    )
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    text = re.sub(r"\s+", " ", text)
    for raw in ("{'", '{"', "':", "we1_beyond_3s", "we2_2of3_beyond_2s"):
        assert raw not in text, f"raw text {raw!r} in the report"
    when = time.strftime("%H:%M:%S", time.localtime(spike))  # subgroups 20 s apart: seconds
    rule1 = "one point beyond 3 sigma (rate 9.5 % against an upper limit of 5.6 %)"
    sentence = f"{when}, reject chart: {rule1}"
    assert sentence in text, text
    assert "one point beyond 3 sigma" in text.split("Alarms", 1)[1]  # the alarm table too


def test_the_page_says_the_span_of_its_verdicts_not_1970(tmp_path):
    """``inspector spc report`` without --from/--to: the header gives the first and last
    verdict's minute, not the epoch and a far future."""
    page = report(tmp_path, exact_rows("L1", [0, 1, 2, 1], n=50))
    first = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0))
    last = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0 + 0.1 * 199))
    assert f"<p>{first} to {last};" in page
    assert "1970" not in page


def test_a_report_of_an_empty_store_is_a_clear_error(tmp_path):
    from inspector.errors import InspectorError

    with pytest.raises(InspectorError, match="no verdicts stored yet"):
        report(tmp_path, [])


def test_report_writes_an_html_page_with_charts(tmp_path):
    from inspector.spc.report import write_report

    store = Store(tmp_path / "spc.sqlite")
    store.add_verdicts(rows("s1", [0.02] * 30 + [0.06] * 10, seed=5))
    store.close()
    out = tmp_path / "report"
    page = write_report(tmp_path / "spc.sqlite", out, 0, 1e12, ChartsSection(baseline_subgroups=20))
    html = page.read_text()
    assert "s1" in html and "Pareto" in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "s1-reject.png" in pngs and (out / "s1-reject.svg").is_file()
