"""What the compute handlers share: request accessors, links, paging, policy shortcuts."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nubes import exception
from nubes.api import microversion, policy
from nubes.api.microversion import APIVersion
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import query_int, refuse_unknown_query

PREFIX = "/compute/v2.1"


#: A server action's handler: (request, the server's row, the body) -> its answer,
#: or None for Nova's usual 202 with no body.
ActionHandler = Callable[[Request, dict[str, Any], Any], Awaitable[Response | None]]


#: A route's handler.
Handler = Callable[[Request], Awaitable[Response]]

state = api_state
ctx = request_context

#: From this version a GET that takes no query parameter refuses any (Nova
#: made its empty query schemas strict); before, one is ignored.
STRICT_QUERY_FROM = "2.102"


def version(request: Request) -> APIVersion:
    return getattr(request.state, "version", microversion.MIN)


def known_query(handler: Handler, by_version: Mapping[str, Collection[str]]) -> Handler:
    """``handler`` behind Nova's query schemas: from each version of
    ``by_version`` on, a query parameter outside the names it maps to is a 400,
    found before anything is looked up (Nova validates the query first);
    before the first version, an unknown one is ignored."""
    steps = sorted(
        (
            (microversion.APIVersion.parse(since), frozenset(names))
            for since, names in by_version.items()
        ),
        reverse=True,
    )

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        current = version(request)
        for since, names in steps:
            if current >= since:
                refuse_unknown_query(request, names)
                break
        return await handler(request)

    return checked


def no_query(handler: Handler) -> Handler:
    """``handler`` of a GET that takes no query parameter: from 2.102 one is a 400."""
    return known_query(handler, {STRICT_QUERY_FROM: ()})


def authorize(
    request: Request, action: str, rule: policy.Rule, project_id: str | None = None
) -> None:
    policy.authorize(ctx(request), f"os_compute_api:{action}", rule, project_id)


def is_admin(request: Request) -> bool:
    return policy.allowed(ctx(request), policy.Rule.ADMIN)


def base_url(request: Request) -> str:
    return state(request).public_endpoint + "/compute"


def links(request: Request, collection: str, item_id: Any) -> list[dict[str, str]]:
    base = base_url(request)
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{item_id}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{item_id}"},
    ]


def next_link(request: Request, collection: str, marker: Any) -> list[dict[str, str]]:
    params = {k: v for k, v in request.query_params.multi_items() if k != "marker"}
    query = "&".join(f"{k}={v}" for k, v in params.items())
    query = f"{query}&marker={marker}" if query else f"marker={marker}"
    return [{"rel": "next", "href": f"{base_url(request)}/v2.1/{collection}?{query}"}]


def limit(request: Request) -> int:
    max_limit: int = state(request).conf.api.max_limit
    value = query_int(request, "limit")
    return max_limit if value is None else min(value, max_limit)


def json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def empty(status: int) -> Response:
    return Response(status_code=status)


def bad_request(reason: str) -> exception.Invalid:
    return exception.Invalid(message=reason)


def not_found(reason: str) -> exception.NotFound:
    return exception.NotFound(message=reason)


def parse_time(name: str, raw: str) -> dt.datetime:
    """A ``changes-since`` style filter value as an aware UTC datetime (naive is UTC;
    a ``+`` of the offset may arrive as a space, unescaped from the query string)."""
    try:
        stamp = dt.datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise bad_request(f"Invalid filter field: {name}.") from None
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


def check_changes_window(since: dt.datetime | None, before: dt.datetime | None) -> None:
    """2.66: ``changes-before`` may not come before ``changes-since`` (Nova's 400)."""
    if since is not None and before is not None and since > before:
        raise bad_request(
            "The value of changes-since must be less than or equal to changes-before."
        )
