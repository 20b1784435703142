"""Logging in and out, and switching project, through the identity API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nubes.dashboard import web
from nubes.dashboard.client import ApiClient, ApiError
from nubes.dashboard.session import LOGIN_COOKIE, Session, csrf_matches


async def login_form(request: Request) -> Response:
    csrf = web.new_login_csrf()
    response = web.render(request, "login.html", csrf=csrf, user="", project="")
    web.login_csrf(request, response, csrf)
    return response


def _session(token: str, body: dict[str, Any]) -> Session:
    return Session(
        token=token,
        user_id=body["user"]["id"],
        user_name=body["user"]["name"],
        project_id=body["project"]["id"],
        project_name=body["project"]["name"],
        roles=[role["name"] for role in body.get("roles", [])],
    )


async def _issue(request: Request, user: str, password: str, project: str) -> Session | str:
    """A new session, or the reason there is none."""
    dash = web.settings(request)
    async with ApiClient(dash.api_app()) as client:
        try:
            token, body = await client.login(user, password, project)
        except ApiError as exc:
            if exc.status == 401:
                return "Wrong user name, password or project."
            return exc.message
    return _session(token, body)


async def login(request: Request) -> Response:
    fields = await web.read_form(request)
    csrf = request.cookies.get(LOGIN_COOKIE, "")
    user, project = fields.get("user", ""), fields.get("project", "")
    if not csrf_matches(csrf, fields.get("csrf")):
        reason = "The login form expired; please try again."
    elif not user or not fields.get("password") or not project:
        reason = "User, password and project are all needed."
    else:
        issued = await _issue(request, user, fields["password"], project)
        if isinstance(issued, Session):
            done = web.redirect(request, "/")
            web.set_session(request, done, web.settings(request).sealer, issued)
            done.delete_cookie(LOGIN_COOKIE, path=web.settings(request).root or "/")
            return done
        reason = issued
    fresh = web.new_login_csrf()
    response = web.render(
        request, "login.html", http_status=401, csrf=fresh, user=user, project=project, error=reason
    )
    web.login_csrf(request, response, fresh)
    return response


async def logout(request: Request, page: web.Page) -> Response:
    await page.form()
    try:
        await page.api.request(
            "DELETE", "identity", "/auth/tokens", headers={"X-Subject-Token": page.session.token}
        )
    except ApiError:
        pass  # an expired token is logged out already
    return web.to_login(request, "")


async def switch_project(request: Request, page: web.Page) -> Response:
    """Another project: the identity API scopes tokens by password only, so it is asked again."""
    fields = await page.form()
    issued = await _issue(
        request, page.session.user_name, fields.get("password", ""), fields.get("project", "")
    )
    if not isinstance(issued, Session):
        return web.redirect(request, "/", error=issued)
    response = web.redirect(request, "/", message=f"Now in project {issued.project_name}.")
    web.set_session(request, response, web.settings(request).sealer, issued)
    return response


async def projects(page: web.Page) -> list[dict[str, Any]]:
    """The projects the user may switch to (the switcher's list)."""
    try:
        body = await page.api.get("identity", "/auth/projects")
    except ApiError:
        return []
    return sorted(body.get("projects", []), key=lambda p: p["name"])
