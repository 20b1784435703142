"""A small REST client of the compute API, as a user of the cloud sees it (httpx)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from nubes.testing.rest import password_token_request

#: Every request asks for the newest microversion release N serves too.
MICROVERSION = "compute 2.61"


@dataclass
class Rest:
    """Tokens of the admin and demo users of ``clouds.yaml`` and the calls the test makes."""

    base: str
    clouds: Path
    tokens: dict[str, str] = field(default_factory=dict)

    async def login(self) -> None:
        data = yaml.safe_load(self.clouds.read_text())["clouds"]
        async with httpx.AsyncClient(timeout=30) as client:
            for who in ("admin", "demo"):
                auth = data[f"nubes-{who}"]["auth"]
                body = password_token_request(auth)
                answer = await client.post(f"{self.base}/identity/v3/auth/tokens", json=body)
                assert answer.status_code == 201, answer.text
                self.tokens[who] = answer.headers["X-Subject-Token"]

    async def call(
        self, method: str, path: str, who: str = "admin", body: Any = None, expect: int = 200
    ) -> Any:
        headers = {"X-Auth-Token": self.tokens[who], "OpenStack-API-Version": MICROVERSION}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(
                method, f"{self.base}/compute/v2.1{path}", json=body, headers=headers
            )
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    async def image_id(self) -> str:
        headers = {"X-Auth-Token": self.tokens["demo"]}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.get(f"{self.base}/image/v2/images", headers=headers)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["images"][0]["id"])

    async def boot(self, name: str, image: str) -> str:
        """A server of m1.tiny without networks (as demo); its id."""
        body = {"server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": "none"}}
        made = await self.call("POST", "/servers", "demo", body, expect=202)
        return str(made["server"]["id"])

    async def server(self, server_id: str) -> dict[str, Any]:
        return dict((await self.call("GET", f"/servers/{server_id}"))["server"])

    async def action(self, server_id: str, body: Any, who: str = "demo", expect: int = 202) -> None:
        await self.call("POST", f"/servers/{server_id}/action", who, body, expect=expect)

    async def wait(
        self, server_id: str, status: str = "ACTIVE", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Until the server has ``status`` and no task state; fails on ERROR."""
        deadline = time.monotonic() + timeout
        while True:
            server = await self.server(server_id)
            if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
                return server
            assert server["status"] != "ERROR", server.get("fault", server)
            assert time.monotonic() < deadline, f"{server_id} never {status}: {server}"
            await asyncio.sleep(0.2)
