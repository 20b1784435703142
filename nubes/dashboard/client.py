"""The dashboard's way to the cloud: the public REST APIs, asked in-process.

Requests go through httpx's ASGI transport to the same application that
serves ``openstack`` clients (token middleware, policy, validation and all),
so the dashboard can do nothing a user could not do with the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

import httpx

#: The compute microversion the dashboard speaks (the newest nubes serves).
COMPUTE_VERSION = "2.61"

PREFIXES = {
    "identity": "/identity/v3",
    "compute": "/compute/v2.1",
    "image": "/image/v2",
    "network": "/networking/v2.0",
}


class ApiError(Exception):
    """An API answer other than success: its status and the message its body gave."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_message(response: httpx.Response) -> str:
    """The readable message of a Nova, Keystone, Neutron or Glance error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
        if "message" in body:
            return str(body["message"])
    return response.reason_phrase


class ApiClient:
    """One user's calls: ``await client.get("compute", "/servers/detail")``."""

    def __init__(self, app: Callable[..., Any], token: str | None = None) -> None:
        self.token = token
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://nubes.internal"
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def _headers(self, service: str, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["X-Auth-Token"] = self.token
        if service == "compute":
            headers["OpenStack-API-Version"] = f"compute {COMPUTE_VERSION}"
        return headers | (extra or {})

    async def request(
        self,
        method: str,
        service: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        response = await self.http.request(
            method,
            PREFIXES[service] + path,
            json=json,
            params=params,
            content=content,
            headers=self._headers(service, headers),
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_message(response))
        return response

    async def get(self, service: str, path: str, **params: Any) -> Any:
        response = await self.request("GET", service, path, params=params or None)
        return response.json()

    async def post(self, service: str, path: str, body: Any) -> Any:
        response = await self.request("POST", service, path, json=body)
        return response.json() if response.content else None

    async def put(self, service: str, path: str, body: Any) -> Any:
        response = await self.request("PUT", service, path, json=body)
        return response.json() if response.content else None

    async def delete(self, service: str, path: str) -> None:
        await self.request("DELETE", service, path)

    async def optional(self, service: str, path: str, **params: Any) -> Any:
        """GET what a cloud may not have (an API another release adds): None on 404."""
        try:
            return await self.get(service, path, **params)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def login(self, user: str, password: str, project: str) -> tuple[str, dict[str, Any]]:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        response = await self.request("POST", "identity", "/auth/tokens", json=body)
        return response.headers["X-Subject-Token"], response.json()["token"]
