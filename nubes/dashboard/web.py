"""What every dashboard page shares: templates, the session, forms, API errors."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from nubes.dashboard.client import ApiClient, ApiError
from nubes.dashboard.session import COOKIE, LOGIN_COOKIE, Sealer, Session, csrf_matches

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("nubes.dashboard", "templates"),
    # Everything a user or the API wrote is text on the page, never markup.
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    enable_async=False,
)

#: Largest form body the dashboard reads (a pasted public key or user data fits).
MAX_FORM_BYTES = 256 * 1024

Handler = Callable[[Request, "Page"], Awaitable[Response]]


class Forbidden(Exception):
    """A form without the session's CSRF token."""


class Page:
    """One request's session, API client and the things its template needs."""

    def __init__(self, request: Request, session: Session, client: ApiClient) -> None:
        self.request = request
        self.session = session
        self.api = client

    def render(self, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
        return render(
            self.request, template, http_status=http_status, session=self.session, **values
        )

    async def form(self) -> dict[str, str]:
        """The posted urlencoded form, after checking its CSRF token."""
        fields = await read_form(self.request)
        if not csrf_matches(self.session.csrf, fields.get("csrf")):
            raise Forbidden()
        return fields

    def check_csrf_header(self) -> None:
        if not csrf_matches(self.session.csrf, self.request.headers.get("X-CSRF-Token")):
            raise Forbidden()


def settings(request: Request) -> Any:
    return request.app.state.dashboard


def url(request: Request, path: str, **query: str) -> str:
    base = settings(request).root + path
    return f"{base}?{urlencode(query)}" if query else base


def render(request: Request, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
    """The page; ``values`` are the template's (any name, ``status`` included)."""
    values.setdefault("session", None)
    # A redirect after a form carries its outcome in the query (shown as text).
    values.setdefault("message", request.query_params.get("message", ""))
    values.setdefault("error", request.query_params.get("error", ""))
    html = TEMPLATES.get_template(template).render(
        root=settings(request).root,
        refresh_ms=int(settings(request).refresh_interval * 1000),
        **values,
    )
    return HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)


#: Nothing but the dashboard's own files may run or load; no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        # Repeated fields (security groups) join with newlines.
        fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    return fields


def redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(url(request, path, **query), status_code=303)


def to_login(request: Request, reason: str = "") -> Response:
    if request.headers.get("X-Requested-With") == "fetch":
        # A live update: the page's script sends the browser to the login page.
        return Response(status_code=401, headers={"X-Login": url(request, "/login")})
    response = redirect(request, "/login", **({"error": reason} if reason else {}))
    response.delete_cookie(COOKIE, path=settings(request).root or "/")
    return response


def set_session(request: Request, response: Response, sealer: Sealer, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        sealer.seal(session),
        max_age=sealer.ttl,
        path=settings(request).root or "/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )


def login_csrf(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        path=settings(request).root or "/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


async def attempt(page: Page, call: Awaitable[Any], back: str, done: str) -> Response:
    """Run a form's API call; back to ``back`` with ``done`` or with the API's message."""
    try:
        await call
    except ApiError as exc:
        if exc.status == 401:
            raise
        return redirect(page.request, back, error=exc.message)
    return redirect(page.request, back, message=done)


def protected(handler: Handler, *, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A page that needs a session: no session (or an expired token) leads to login."""

    async def endpoint(request: Request) -> Response:
        dash = settings(request)
        session = dash.sealer.open(request.cookies.get(COOKIE))
        if session is None:
            return to_login(request, "Please log in." if COOKIE in request.cookies else "")
        if admin and not session.is_admin:
            return render(
                request,
                "error.html",
                http_status=403,
                session=session,
                title="Not allowed",
                detail="This page is for administrators.",
            )
        async with ApiClient(dash.api_app(), session.token) as client:
            page = Page(request, session, client)
            try:
                return await handler(request, page)
            except Forbidden:
                return page.render(
                    "error.html",
                    http_status=403,
                    title="Form expired",
                    detail="The form was not sent by this session; reload and try again.",
                )
            except ApiError as exc:
                if exc.status == 401:
                    return to_login(request, "Your session has expired; please log in again.")
                return page.render(
                    "error.html",
                    http_status=exc.status if 400 <= exc.status < 500 else 502,
                    title=f"The cloud said no ({exc.status})",
                    detail=exc.message,
                )

    return endpoint
