"""Training runs from the page: start (one at a time), progress (polled by htmx), cancel,
export a finished run again (test-time flips, variants, averaged with another run)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..work.exports import OPTIONS
from .common import bench, error, field, page, process_block, render


@page("viewer")
async def train_page(request: Request, user) -> Response:
    b = bench(request)
    b.jobs.refresh()
    runs = b.store.runs()
    last = runs[0] if runs else None
    name = b.jobs.default_name()
    epochs = last["epochs"] if last else b.cfg.training.epochs
    return render(
        request,
        "train.html",
        runs=runs,
        active=b.store.active_runs(),
        default_name=name,
        default_epochs=epochs,
        command=shlex.join(b.jobs.command(b.cfg.training.runs / name, epochs)),
        no_tensorflow=_install_hint(),
        progress={r["id"]: b.jobs.progress(r) for r in runs[:5]},
        export_options=OPTIONS,
        partners=_finished(runs),
    )


def _finished(runs: list[dict]) -> list[dict]:
    """The runs an export may average with (``--with``): those that finished training. Only
    a finished run's block shows the export form, so a running one's poll skips the query."""
    return [r for r in runs if r["status"] == "done"]


@page("reviewer")
async def start(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    text = field(form, "epochs", most=12).strip()
    if not (text.isascii() and text.isdigit()):
        return error(request, user, 400, "epochs: a whole number")
    rid = await run_in_threadpool(
        b.jobs.start, field(form, "name", most=200).strip(), int(text), user.name
    )
    return RedirectResponse(f"/train#run-{rid}", status_code=303)


@page("viewer")
async def progress(request: Request, user) -> Response:
    """One run's progress block (the htmx poll target; a whole page without htmx)."""
    b = bench(request)
    b.jobs.refresh()
    run = b.store.run(request.path_params["rid"])
    if run is None:
        return error(request, user, 404, "no such run")
    name = "_run.html" if request.headers.get("hx-request") else "run.html"
    return render(
        request,
        name,
        run=run,
        p=b.jobs.progress(run),
        export_options=OPTIONS,
        partners=_finished(b.store.runs()) if run["status"] == "done" else [],
    )


@page("reviewer")
async def cancel(request: Request, user) -> Response:
    b = bench(request)
    rid = request.path_params["rid"]
    if not await run_in_threadpool(b.jobs.cancel, rid):  # waits up to 15 s for the process
        return error(request, user, 409, "that run is not running")
    return RedirectResponse(f"/train#run-{rid}", status_code=303)


@page("reviewer")
async def export(request: Request, user) -> Response:
    """``inspector export`` of a finished run into a new model folder of that run."""
    b = bench(request)
    run = b.store.run(request.path_params["rid"])
    if run is None:
        return error(request, user, 404, "No such run.")
    form = await request.form()
    options = [key for key in OPTIONS if field(form, key, most=8)]
    if "force" in options and not user.can("admin"):
        return error(request, user, 403, "Exporting a run that learned too little needs the "
                     "admin role.", title="Not exported", back_url="/train")  # fmt: skip
    members = []
    other = field(form, "with", most=12).strip()
    if other:
        partner = b.store.run(int(other)) if other.isascii() and other.isdigit() else None
        if partner is None or partner["status"] != "done":
            return error(request, user, 400, f"with: run {other!r} is not a finished run to "
                         "average with", title="Not exported", back_url="/train")  # fmt: skip
        if partner["id"] == run["id"]:
            return error(request, user, 400, "with: a run is not averaged with itself; choose "
                         "another finished run", title="Not exported", back_url="/train")  # fmt: skip
        members = [(Path(partner["out"]), partner["name"])]
    xid = await run_in_threadpool(
        b.exports.start, Path(run["out"]), run["name"], options, user.name, members
    )
    return RedirectResponse(f"/train/export/{xid}", status_code=303)


@page("viewer")
async def export_progress(request: Request, user) -> Response:
    """One export's block (the htmx poll target; a whole page without htmx)."""
    x = bench(request).exports.get(request.path_params["xid"])
    return process_block(request, user, x, "export", x="export")


def _install_hint() -> str | None:
    """The command that installs training into this interpreter, when TensorFlow is missing:
    from a checkout its Makefile's step, else pip with the project's extra."""
    if importlib.util.find_spec("tensorflow") is not None:
        return None
    checkout = Path(__file__).resolve().parents[3]
    venv = Path(sys.prefix)
    if (checkout / "Makefile").is_file() and venv.parent == checkout:
        return f"cd {shlex.quote(str(checkout))} && make {venv.name}/.installed-train"
    return f"{shlex.quote(sys.executable)} -m pip install 'defect-inspector[train]'"
