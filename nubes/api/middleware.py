"""ASGI middleware: request ids, authentication, compute microversions, last-resort errors.

Pure ASGI (no per-request objects beyond what Starlette builds anyway).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute

from nubes import exception
from nubes.api import errors, microversion
from nubes.api.state import ApiState
from nubes.context import RequestContext, current_request_id, new_request_id

LOG = logging.getLogger("nubes.api.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-openstack-request-id"
COMPUTE_REQUEST_ID_HEADER = b"x-compute-request-id"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class RequestIdMiddleware:
    """Gives each request an id (``req-<uuid>``), in the logs and on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                if scope["path"].startswith("/compute"):
                    headers.append((COMPUTE_REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # The last resort: Starlette's error middleware has answered (in
            # JSON, see errors.last_resort_handlers) and re-raises; anything
            # that escaped before an answer gets one here. Nothing goes on
            # to the server, which would answer in plain text.
            if status == 0:
                service = errors.service_of(scope["path"])
                code, body = errors.raw_error(service, *errors.status_and_message(exc))
                await _respond(send_with_id, code, body, errors.retry_headers(exc))
            else:
                # Answered already (by the JSON handler, or mid-stream): the
                # server must not see it; the log keeps it.
                LOG.error("request failed (answered with status %s)", status, exc_info=exc)
        finally:
            LOG.info(
                '%s "%s %s" status: %s time: %.4f',
                (scope.get("client") or ("-",))[0],
                scope["method"],
                scope["path"]
                + (
                    ("?" + scope["query_string"].decode("latin-1"))
                    if scope.get("query_string")
                    else ""
                ),
                status,
                time.monotonic() - started,
            )
            current_request_id.reset(token)


async def _respond(
    send: Send, code: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += list(extra)
    if code == 401:
        headers.append((b"www-authenticate", b'Keystone uri="/identity"'))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ServiceMiddleware:
    """Per service: authenticate (unless the path is public), negotiate the
    compute microversion, and answer any error that escaped the handlers in
    the service's error shape.

    ``public`` holds paths (relative to the service's mount) that need no
    token, as ``path`` for every method or ``path:METHOD`` for one.
    ``granted`` matches ``path:METHOD`` of the requests that may come with an
    image grant (``X-Image-Grant``, nubes/grants.py) instead of a token: those
    pass with the grant in ``request.state.grant`` and no context, and the
    handler checks the grant. Elsewhere a grant is ignored.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        state: ApiState,
        public: Collection[str] = (),
        microversions: bool = False,
        granted: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.state = state
        self.public = frozenset(public)
        self.microversions = microversions
        self.granted = granted

    def _is_public(self, relative: str, method: str) -> bool:
        for path in (relative, relative.rstrip("/")):
            if path in self.public or f"{path}:{method}" in self.public:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from nubes.api.identity import tokens

        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or new_request_id()
        path = scope["path"]
        root = scope.get("root_path", "")
        relative = path[len(root) :] if root and path.startswith(root) else path
        headers = _headers(scope)
        extra: list[tuple[bytes, bytes]] = []
        try:
            if self.microversions and (relative == "/v2" or relative.startswith("/v2/")):
                # The v2.0 endpoint has no microversions: it is v2.1 at its
                # first version whatever the headers ask, and says no version.
                state["version"] = microversion.MIN
            elif self.microversions and relative.rstrip("/") not in ("", "/"):
                version = microversion.negotiate(headers)
                state["version"] = version
                extra = microversion.response_headers(version)
            grant = headers.get("x-image-grant")
            if (
                grant
                and self.granted is not None
                and self.granted.fullmatch(f"{relative}:{scope['method']}")
            ):
                state["grant"] = grant
            elif not self._is_public(relative, scope["method"]):
                token = headers.get("x-auth-token")
                if not token:
                    raise exception.NotAuthenticated()
                ctxt = await tokens.context_for(self.state, token, request_id)
                if (ctxt.domain_id or ctxt.system_scope) and self.service != "identity":
                    # Compute, image and network work in projects: a domain-
                    # or system-scoped token names none.
                    raise exception.Forbidden(reason="This service needs a project-scoped token.")
                state["context"] = ctxt
        except exception.NubesError as exc:
            code, body = errors.raw_error(self.service, *errors.status_and_message(exc))
            await _respond(send, code, body, [*extra, *errors.retry_headers(exc)])
            return

        started = False

        async def send_with_version(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_version)
        except Exception as exc:
            if started:
                raise
            code, body = errors.raw_error(self.service, *errors.status_and_message(exc))
            await _respond(send, code, body, [*extra, *errors.retry_headers(exc)])


def service_app(
    state: ApiState,
    routes: Sequence[BaseRoute],
    *,
    service: str,
    public: Collection[str] = (),
    microversions: bool = False,
    granted: re.Pattern[str] | None = None,
) -> Starlette:
    """One service's app: its routes behind :class:`ServiceMiddleware`, errors
    in the service's shape, and ``state`` where :func:`api_state` finds it."""
    app = Starlette(
        routes=list(routes),
        middleware=[
            Middleware(
                ServiceMiddleware,
                service=service,
                state=state,
                public=public,
                microversions=microversions,
                granted=granted,
            )
        ],
        exception_handlers=errors.handlers(service),
    )
    app.state.api = state
    return app


def api_state(request: Request) -> ApiState:
    """The API process's shared state, as :func:`service_app` left it on the app."""
    state: ApiState = request.app.state.api
    return state


def request_context(request: Request) -> RequestContext:
    """The caller's context, as :class:`ServiceMiddleware` authenticated it."""
    ctxt: RequestContext = request.state.context
    return ctxt
