"""What every view shares: the ``page`` decorator (session, role, CSRF) and ``render``.

``@page("reviewer")`` lets the view run only for a logged-in user of at least that role;
on a POST it first checks the session's CSRF token (form field ``csrf`` or header
``X-CSRF-Token``) and refuses the request with 403 without it.
"""

from __future__ import annotations

import calendar
import functools
import json
import math
import time
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...errors import InspectorError
from .. import auth
from ..db.store import MAX_ID, SORTS, PartFilter

MAX_FIELD = 4096  # characters of one form or query field; longer ones are refused (400)


def bench(request: Request):
    return request.app.state.bench


def page(role: str = "viewer"):
    def wrap(view):
        @functools.wraps(view)
        async def run(request: Request) -> Response:
            store = bench(request).store
            user = auth.user_of(store, request.cookies.get(auth.COOKIE))
            if request.method == "POST":
                form = await request.form()
                token = _text(form.get("csrf")) or request.headers.get("x-csrf-token")
                if user is None or not auth.same(token, user.csrf):
                    return HTMLResponse("refused: missing or wrong CSRF token", status_code=403)
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            if not user.can(role):
                return error(request, user, 403, f"this needs the {role} role")
            request.state.user = user
            try:
                return await view(request, user)
            except InspectorError as exc:
                return error(request, user, 400, "; ".join(exc.problems))

        return run

    return wrap


def render(request: Request, name: str, status: int = 200, **context) -> Response:
    templates = request.app.state.templates
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("fmt_time", fmt_time)
    context.setdefault("to_json", lambda v: json.dumps(v, indent=2, default=str))
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def error(request: Request, user, status: int, message: str, **page) -> Response:
    """The site's error page: ``message`` in a sentence; ``title``, ``back_url`` and
    ``back_text`` may say more."""
    return render(request, "error.html", status=status, user=user, message=message, **page)


def process_block(request: Request, user, found: dict | None, what: str, **name) -> Response:
    """The block of a process started from a page (an evaluation, an export): the htmx poll
    gets the block, a plain request the whole page; ``name`` is the template's one variable
    (``e=...``), named like the templates (``_evaluation.html`` and ``evaluation.html``)."""
    if found is None:
        text = f"No such {what} (the workbench keeps them until it restarts)."
        return error(request, user, 404, text)
    ((key, template),) = name.items()
    partial = request.headers.get("hx-request")
    return render(request, f"_{template}.html" if partial else f"{template}.html", **{key: found})


def fmt_time(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def _time(text: str) -> float | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (UTC) to Unix seconds; None if empty or bad."""
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text.strip(), fmt)))
        except ValueError:
            continue
    return None


def _float(text: str) -> float | None:
    """A finite number, or None (empty, not a number, NaN, infinite)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(value) -> str:
    """A form value as text; an uploaded file (a form value should never be one) is ''."""
    return value if isinstance(value, str) else ""


def field(form, key: str, default: str = "", most: int = MAX_FIELD) -> str:
    """A text field of a form; InspectorError (400) when it is too long or a file."""
    value = form.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InspectorError(f"{key}: expected text, got a file")
    if len(value) > most:
        raise InspectorError(f"{key}: longer than {most} characters")
    return value


def row_id(text, what: str = "id") -> int | None:
    """A row id from a form or query: a whole number 1..2^63-1 (digits only, at most 18 of
    them); None when empty; InspectorError (400) for anything else."""
    text = _text(text).strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or not 0 < int(text) <= MAX_ID:
        raise InspectorError(f"{what}: expected a whole number from 1 to {MAX_ID}")
    return int(text)


FILTER_KEYS = (
    "station",
    "since",
    "until",
    "reason",
    "cls",
    "score_min",
    "score_max",
    "model",
    "reviewed",
    "sort",
)


def part_filter(params) -> PartFilter:
    g = {k: _text(params.get(k) or "").strip()[:MAX_FIELD] for k in FILTER_KEYS}
    return PartFilter(
        station=g["station"],
        since=_time(g["since"]),
        until=_time(g["until"]),
        reason=g["reason"],
        cls=g["cls"],
        score_min=_float(g["score_min"]),
        score_max=_float(g["score_max"]),
        model=g["model"],
        reviewed=g["reviewed"] if g["reviewed"] in ("yes", "no") else "",
        sort=g["sort"] if g["sort"] in SORTS else "time",
    )


def filter_query(params, **extra) -> str:
    """The filter part of a query string (to carry the inbox's filter to the part page)."""
    items = {k: params.get(k) for k in FILTER_KEYS if params.get(k)}
    items.update({k: v for k, v in extra.items() if v is not None})
    return urlencode(items)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site (no scheme, no //host) may be a redirect target."""
    if (
        not target
        or len(target) > MAX_FIELD
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return default
    return target
