"""Log in and out."""

from __future__ import annotations

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
    if not auth.same(form.get("csrf"), request.cookies.get(auth.LOGIN_COOKIE)):
        return HTMLResponse("refused: missing or wrong CSRF token", status_code=403)
    b = bench(request)
    result = auth.login(
        b.store,
        str(form.get("name", "")),
        str(form.get("password", "")),
        b.cfg.server.session_hours,
    )
    target = safe_next(str(form.get("next") or ""))
    if result is None:
        token = auth.new_token()
        response = render(
            request, "login.html", status=401, user=None, csrf=token, next=target, failed=True
        )
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
