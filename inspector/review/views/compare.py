"""Two evaluation reports side by side."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ..dataset import UNSURE
from ..figures import operating, plots, reports
from .common import _float, bench, error, page, render


@page("viewer")
async def compare_page(request: Request, user) -> Response:
    b = bench(request)
    found = reports.find(b.cfg.reports)
    a, bb = request.query_params.get("a", ""), request.query_params.get("b", "")
    result = None
    if a and bb:
        if a not in found or bb not in found:
            return error(request, user, 404, "no such report")
        ra, rb = reports.load(found[a]), reports.load(found[bb])
        result = reports.compare(ra, rb)
        result["operating"] = _operating(b, ra, rb, request.query_params.get("i", ""))
        result["charts"] = plots.report_charts(
            [
                (f"A {a}", ra["predictions"], lambda lb, m=ra["metrics"]: reports.is_defect(lb, m)),
                (
                    f"B {bb}",
                    rb["predictions"],
                    lambda lb, m=rb["metrics"]: reports.is_defect(lb, m),
                ),
            ]
        )
        root = Path(b.cfg.dataset.path).resolve()
        for c in result["changed"]:
            file = Path(c["file"]).resolve()
            c["href"] = (
                "/media/dataset/" + file.relative_to(root).as_posix()
                if file.is_relative_to(root)
                else None
            )
    return render(request, "compare.html", names=sorted(found), a=a, b=bb, result=result)


def _share(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.1f} %)" if n else "none to count"


def _operating(b, ra: dict, rb: dict, chosen: str) -> dict:
    """The slider's points: for each threshold, reports A and B and the recorded parts."""
    own = [r["metrics"].get("threshold") for r in (ra, rb)]
    ts = operating.grid([x for x in own if isinstance(x, (int, float))])
    per = [
        operating.report_points(
            r["predictions"], lambda lb, m=r["metrics"]: reports.is_defect(lb, m), ts
        )
        for r in (ra, rb)
    ]
    rec = operating.recorded_points(b.store.scored_parts(), b.cfg.dataset.good, UNSURE, ts)
    points = []
    for i, t in enumerate(ts):
        row = {"t": f"{t:.3f}"}
        for key, pts in (("a", per[0]), ("b", per[1]), ("r", rec)):
            if pts is None:
                row[f"{key}_esc"] = row[f"{key}_fr"] = "no scores"
                continue
            p = pts[i]
            row[f"{key}_esc"] = _share(p["escapes"], p["defective"])
            row[f"{key}_fr"] = _share(p["false_rejects"], p["good"])
        row["r_rej"] = _share(rec[i]["rejected"], rec[i]["parts"])
        points.append(row)
    wanted = _float(chosen)
    if wanted is not None and 0 <= wanted < len(ts) and wanted == int(wanted):
        index = int(wanted)
    else:  # A's own threshold, else 0.5
        first = own[0] if isinstance(own[0], (int, float)) else 0.5
        index = min(range(len(ts)), key=lambda j: abs(ts[j] - first))
    return {"points": points, "index": index, "point": points[index], "json": json.dumps(points)}
