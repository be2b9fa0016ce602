"""Two evaluation reports side by side."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from .. import reports
from .common import bench, error, page, render


@page("viewer")
async def compare_page(request: Request, user) -> Response:
    b = bench(request)
    found = reports.find(b.cfg.reports)
    a, bb = request.query_params.get("a", ""), request.query_params.get("b", "")
    result = None
    if a and bb:
        if a not in found or bb not in found:
            return error(request, user, 404, "no such report")
        result = reports.compare(reports.load(found[a]), reports.load(found[bb]))
        root = Path(b.cfg.dataset.path).resolve()
        for c in result["changed"]:
            file = Path(c["file"]).resolve()
            c["href"] = (
                "/media/dataset/" + file.relative_to(root).as_posix()
                if file.is_relative_to(root)
                else None
            )
    return render(request, "compare.html", names=sorted(found), a=a, b=bb, result=result)
