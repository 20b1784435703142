"""The request context that travels with every API request and RPC message.

``caller`` is the identity of the *service* that sent a message. It is never
taken from a message body: the RPC server fills it in from what the transport
verified (the broker-validated AMQP ``user_id`` on rabbit, the identity a
``memory://`` transport was opened with). A body that claims another caller is
refused before any method runs.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

#: The request id of the work the current task does (an API request, or an
#: RPC message that carries one), for log lines; "-" when there is none.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "nubes_request_id", default="-"
)


class RequestIdFilter(logging.Filter):
    """Gives every log record a ``request_id`` attribute (the current one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass(slots=True)
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    user_id: str | None = None
    project_id: str | None = None
    #: The domain a domain-scoped token is for. Only the identity API takes
    #: domain- and system-scoped tokens (the others refuse them at the door),
    #: so neither scope travels on the bus: they are not in :meth:`to_dict`.
    domain_id: str | None = None
    #: ``all`` for a system-scoped token; like ``domain_id``, identity API only.
    system_scope: str | None = None
    roles: list[str] = field(default_factory=list)
    #: The verified identity of the service that sent the current message
    #: (None for a context that was made locally and has not crossed the bus).
    caller: str | None = None
    read_deleted: str = "no"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "project_id": self.project_id,
            "roles": list(self.roles),
            "caller": self.caller,
            "read_deleted": self.read_deleted,
        }

    def to_record(self) -> dict[str, Any]:
        """The context a durable task resumes with: never a caller identity
        (whoever runs the task later speaks as itself)."""
        return {**self.to_dict(), "caller": None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        roles = data.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise TypeError("roles must be a list of strings")
        for key in ("request_id", "user_id", "project_id", "caller"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{key} must be a string")
        return cls(
            request_id=data.get("request_id") or new_request_id(),
            user_id=data.get("user_id"),
            project_id=data.get("project_id"),
            roles=list(roles),
            caller=data.get("caller"),
            read_deleted=str(data.get("read_deleted") or "no"),
        )

    def elevated(self) -> RequestContext:
        """A copy with the admin role, for internal work on the user's behalf."""
        roles = self.roles if "admin" in self.roles else [*self.roles, "admin"]
        return RequestContext(
            request_id=self.request_id,
            user_id=self.user_id,
            project_id=self.project_id,
            domain_id=self.domain_id,
            system_scope=self.system_scope,
            roles=list(roles),
            caller=self.caller,
            read_deleted=self.read_deleted,
        )


def get_admin_context(caller: str | None = None) -> RequestContext:
    return RequestContext(roles=["admin"], caller=caller)
