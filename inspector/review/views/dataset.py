"""The dataset page: images per class (and split), disagreements, labels per day, the log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .common import bench, page, render


@page("viewer")
async def dataset_page(request: Request, user) -> Response:
    b = bench(request)
    counts = b.labeller.counts()
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
    )
