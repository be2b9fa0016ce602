"""The dataset page: images per class (and split), disagreements, labels per day, the log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .common import bench, page, render, row_id


@page("viewer")
async def dataset_page(request: Request, user) -> Response:
    b = bench(request)
    counts = b.labeller.counts()
    undone = b.store.label(row_id(request.query_params.get("undone"), "undone"))
    part = b.store.part(undone["part"]) if undone else None
    return render(
        request,
        "dataset.html",
        counts=counts,
        root=b.cfg.dataset.path,
        classes=b.labeller.classes,
        labels=b.store.label_counts(),
        disagreements=b.store.disagreements(),
        per_day=b.store.labels_per_day(),
        log=b.store.label_log(limit=30),
        undone=undone,
        undone_part=part,
    )
