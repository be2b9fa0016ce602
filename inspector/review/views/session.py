"""Log in and out."""

from __future__ import annotations

import math

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import auth
from .common import bench, page, render, safe_next


def _cookie_args(request: Request) -> dict:
    secure = bench(request).cfg.server.secure_cookies
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}


async def login_form(request: Request) -> Response:
    token = auth.new_token()
    response = render(
        request,
        "login.html",
        user=None,
        csrf=token,
        next=safe_next(request.query_params.get("next")),
        failed=False,
    )
    response.set_cookie(auth.LOGIN_COOKIE, token, max_age=3600, **_cookie_args(request))
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    csrf = form.get("csrf")
    if not isinstance(csrf, str) or not auth.same(csrf, request.cookies.get(auth.LOGIN_COOKIE)):
        return HTMLResponse("refused: missing or wrong CSRF token", status_code=403)
    b = bench(request)
    name, password = form.get("name"), form.get("password")
    target = safe_next(form.get("next") if isinstance(form.get("next"), str) else "")
    if not isinstance(name, str) or not isinstance(password, str):
        name, password = "", ""
    name, password = name[:200], password[:1024]
    throttle = auth.Throttle(b.cfg.server.login_free_attempts, b.cfg.server.login_delay_max_s)
    address = request.client.host if request.client else "unknown"
    result = await run_in_threadpool(
        throttle.attempt, b.store, name, password, address, b.cfg.server.session_hours
    )
    if not isinstance(result, tuple):
        token = auth.new_token()
        wait = math.ceil(result) if isinstance(result, float) else 0
        response = render(
            request,
            "login.html",
            status=429 if wait else 401,
            user=None,
            csrf=token,
            next=target,
            failed=not wait,
            wait=wait,
        )
        if wait:
            response.headers["Retry-After"] = str(wait)
        response.set_cookie(auth.LOGIN_COOKIE, token, max_age=3600, **_cookie_args(request))
        return response
    token, _user = result
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.COOKIE, token, max_age=int(b.cfg.server.session_hours * 3600), **_cookie_args(request)
    )
    response.delete_cookie(auth.LOGIN_COOKIE, path="/")
    return response


@page("viewer")
async def logout(request: Request, user) -> Response:
    bench(request).store.drop_session(request.cookies.get(auth.COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response
