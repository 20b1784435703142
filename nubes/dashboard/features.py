"""What this cloud's API offers beyond the core, found by asking it (never assumed).

Server actions that other work adds (pause, suspend, shelve, snapshot) are
probed once per process: the compute API looks an action's name up before
the server, so an action on a server that cannot exist answers 400 "no such
action" when the cloud lacks it and 404 when it has it.
"""

from __future__ import annotations

from typing import Any

from nubes.dashboard.client import ApiError

#: Optional server actions, each with its undo where it has one.
OPTIONAL_ACTIONS = (
    "pause",
    "unpause",
    "suspend",
    "resume",
    "shelve",
    "unshelve",
    "createImage",
)

_NO_SERVER = "00000000-0000-0000-0000-000000000000"
_known: dict[str, bool] = {}


async def _has_action(page: Any, name: str) -> bool:
    if name not in _known:
        try:
            await page.api.post("compute", f"/servers/{_NO_SERVER}/action", {name: None})
            _known[name] = True
        except ApiError as exc:
            if exc.status == 401:
                raise
            _known[name] = exc.status != 400 or "no such action" not in exc.message.lower()
    return _known[name]


async def server_actions(page: Any) -> set[str]:
    """The optional actions this cloud's compute API knows."""
    return {name for name in OPTIONAL_ACTIONS if await _has_action(page, name)}
