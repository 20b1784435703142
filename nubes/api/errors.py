"""One mapping from the nubes error tree to each service's error body.

Compute answers in Nova's shape, ``{"itemNotFound": {"message": ..., "code":
404}}``; identity in Keystone's, ``{"error": {"code", "title", "message"}}``;
image in a JSON form of Glance's. A message that is not safe for users is
replaced by a generic one (the request id leads to the log line).
"""

from __future__ import annotations

import http
import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nubes import exception

LOG = logging.getLogger(__name__)

#: Nova's fault names by status code (nova.api.openstack.wsgi.Fault).
NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


#: Seconds a client is told to wait (``Retry-After``) when a backend is away.
RETRY_AFTER_SECONDS = 5
#: What a client is told instead when the database or the bus is away: the
#: request may simply be sent again (the reason itself stays in the log).
UNAVAILABLE = {
    exception.DBConnectionError: "The database is unavailable at the moment",
    exception.DBDeadlock: "The database is busy at the moment",
    exception.TransportError: "The message bus is unavailable at the moment",
}


def _unavailable(exc: BaseException) -> str | None:
    for kind, text in UNAVAILABLE.items():
        if isinstance(exc, kind):
            return f"{text}; please retry the request in {RETRY_AFTER_SECONDS} seconds."
    return None


def retry_headers(exc: BaseException) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` for an answer to ``exc`` when it means "try again soon"."""
    if _unavailable(exc) is None:
        return []
    return [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


def status_and_message(exc: BaseException) -> tuple[int, str]:
    unavailable = _unavailable(exc)
    if unavailable is not None:
        LOG.warning("request failed for now: %s", exc)
        return 503, unavailable
    if isinstance(exc, exception.NubesError):
        code = exc.code
        if code >= 500 or not exc.safe:
            LOG.error("request failed: %s", exc, exc_info=code >= 500 and not exc.safe)
        return code, exc.user_message()
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    LOG.error("unexpected error", exc_info=exc)
    return 500, exception.GENERIC_MESSAGE


def nova_fault(code: int, message: str) -> dict[str, Any]:
    return {NOVA_FAULT_NAMES.get(code, "computeFault"): {"code": code, "message": message}}


def keystone_error(code: int, message: str) -> dict[str, Any]:
    try:
        title = http.HTTPStatus(code).phrase
    except ValueError:
        title = "Error"
    return {"error": {"code": code, "title": title, "message": message}}


def glance_error(code: int, message: str) -> dict[str, Any]:
    try:
        title = http.HTTPStatus(code).phrase
    except ValueError:
        title = "Error"
    return {"code": code, "title": title, "message": message}


#: Neutron's error type by status, for errors that have no Neutron name of their own.
NEUTRON_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
    503: "HTTPServiceUnavailable",
}
#: nubes error classes whose Neutron type has another name.
NEUTRON_RENAMES = {
    "NetworkInvalid": "InvalidInput",
    "NetworkOverQuota": "OverQuota",
    "NetworkBadRequest": "BadRequest",
    "ValidationError": "InvalidInput",
    "MalformedBody": "HTTPBadRequest",
    "DBDuplicateEntry": "HTTPConflict",
}


def neutron_error(code: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """Neutron's body: clients (openstacksdk) read ``NeutronError.message``."""
    return {
        "NeutronError": {
            "type": kind or NEUTRON_TYPES.get(code, "HTTPInternalServerError"),
            "message": message,
            "detail": "",
        }
    }


def _neutron_type(exc: BaseException, code: int) -> str | None:
    if not isinstance(exc, exception.NubesError) or code >= 500 or not exc.safe:
        return None
    name = type(exc).__name__
    return NEUTRON_RENAMES.get(name, name)


BODIES = {
    "compute": nova_fault,
    "identity": keystone_error,
    "image": glance_error,
    "network": neutron_error,
}


def error_response(service: str, exc: BaseException) -> Response:
    code, message = status_and_message(exc)
    headers = {}
    if code == 401:
        headers["WWW-Authenticate"] = 'Keystone uri="/identity"'
    if _unavailable(exc) is not None:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if code == 405 and isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)
    if service == "network":
        body = neutron_error(code, message, _neutron_type(exc, code))
    else:
        body = BODIES[service](code, message)
    return JSONResponse(body, status_code=code, headers=headers)


#: How much of a request's method and path an error message repeats.
MAX_ECHOED_ROUTE = 200


def _routing_error(service: str, request: Request, exc: Exception) -> Response:
    # Only routers raise HTTPException (our handlers raise NubesError): their
    # bare "Not Found" would not tell the caller what was wrong.
    assert isinstance(exc, HTTPException)
    route = f"{request.method} {request.url.path}"
    if len(route) > MAX_ECHOED_ROUTE:
        route = route[: MAX_ECHOED_ROUTE - 3] + "..."
    if exc.status_code == 404:
        message = f"The resource could not be found: {route} is not a supported route"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"The method specified is not allowed for this resource: {route}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
    else:
        return error_response(service, exc)
    return error_response(service, HTTPException(exc.status_code, message, exc.headers))


def handlers(service: str) -> dict[Any, Any]:
    """Starlette exception handlers that answer in ``service``'s error shape."""

    async def handle(request: Request, exc: Exception) -> Response:
        return error_response(service, exc)

    async def routing(request: Request, exc: Exception) -> Response:
        return _routing_error(service, request, exc)

    return {exception.NubesError: handle, HTTPException: routing}


def service_of(path: str) -> str:
    """The service whose error shape answers for ``path`` (compute's by default)."""
    first = path.lstrip("/").split("/", 1)[0]
    if first == "networking":
        return "network"
    return first if first in BODIES else "compute"


def last_resort_handlers() -> dict[Any, Any]:
    """For the app that mounts the services: a path no service serves, or
    whatever escaped a service, still gets a JSON answer in the shape of the
    service the path names, never a plain-text page."""

    async def handle(request: Request, exc: Exception) -> Response:
        return error_response(service_of(request.url.path), exc)

    async def routing(request: Request, exc: Exception) -> Response:
        return _routing_error(service_of(request.url.path), request, exc)

    return {Exception: handle, HTTPException: routing}


def raw_error(service: str, code: int, message: str) -> tuple[int, bytes]:
    return code, json.dumps(BODIES[service](code, message)).encode()
