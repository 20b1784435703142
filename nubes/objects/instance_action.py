"""InstanceAction and InstanceActionEvent: the history of what was done to an instance.

An action is one user request on an instance (``reboot``, ``resize`` ...),
keyed by the request id that travels with every message of the operation;
its events are the steps services record under it (``compute_reboot_instance``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

#: Event results, as Nova writes them.
RESULT_SUCCESS = "Success"
RESULT_ERROR = "Error"


@base.register
class InstanceAction(base.VersionedObject):
    """A user-visible operation on an instance.

    ``message`` is "Error" once one of its events failed.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    action = fields.String(nullable=True)
    instance_uuid = fields.UUID()
    request_id = fields.String(nullable=True)
    user_id = fields.String(nullable=True)
    project_id = fields.String(nullable=True)
    start_time = fields.DateTime(nullable=True)
    finish_time = fields.DateTime(nullable=True)
    message = fields.String(nullable=True)

    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> InstanceAction:
        return backend.from_row(cls, row)

    @base.remotable_classmethod
    async def action_start(
        cls: type[InstanceAction],
        context: RequestContext,
        instance_uuid: str,
        action: str,
        request_id: str | None = None,
    ) -> InstanceAction:
        """Record that ``action`` started on the instance for the context's
        request (or ``request_id``), user and project."""
        row = await backend.get().action_start(
            context,
            instance_uuid=instance_uuid,
            action=action,
            request_id=request_id or context.request_id,
            user_id=context.user_id,
            project_id=context.project_id,
        )
        return cls._from_db(row)

    @base.remotable_classmethod
    async def action_finish(
        cls: type[InstanceAction],
        context: RequestContext,
        instance_uuid: str,
        request_id: str | None = None,
        message: str | None = None,
    ) -> InstanceAction:
        """Record that the request's action on the instance finished."""
        row = await backend.get().action_finish(
            context,
            instance_uuid=instance_uuid,
            request_id=request_id or context.request_id,
            message=message,
        )
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_by_request_id(
        cls: type[InstanceAction], context: RequestContext, instance_uuid: str, request_id: str
    ) -> InstanceAction:
        """The newest action of that request on that instance; InstanceActionNotFound if none."""
        row = await backend.get().action_get_by_request_id(context, instance_uuid, request_id)
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_by_instance_uuid(
        cls: type[InstanceAction],
        context: RequestContext,
        instance_uuid: str,
        limit: int | None = None,
    ) -> list[InstanceAction]:
        """The instance's actions, newest first."""
        rows = await backend.get().actions_get(context, instance_uuid, limit=limit)
        return [cls._from_db(row) for row in rows]


@base.register
class InstanceActionEvent(base.VersionedObject):
    """One step of an action, recorded by the service that ran it.

    ``result`` is "Success" or "Error"; ``traceback`` and ``details`` are for
    admins.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    event = fields.String(nullable=True)
    action_id = fields.Integer()
    start_time = fields.DateTime(nullable=True)
    finish_time = fields.DateTime(nullable=True)
    result = fields.String(nullable=True)
    traceback = fields.String(nullable=True)
    host = fields.String(nullable=True)
    details = fields.String(nullable=True)

    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> InstanceActionEvent:
        return backend.from_row(cls, row)

    @base.remotable_classmethod
    async def event_start(
        cls: type[InstanceActionEvent],
        context: RequestContext,
        instance_uuid: str,
        event_name: str,
        request_id: str | None = None,
        host: str | None = None,
    ) -> InstanceActionEvent:
        """Record that step ``event_name`` started, under the action of the
        context's request (or ``request_id``) on the instance;
        InstanceActionNotFound if there is no such action."""
        row = await backend.get().action_event_start(
            context,
            instance_uuid=instance_uuid,
            request_id=request_id or context.request_id,
            event=event_name,
            host=host,
        )
        return cls._from_db(row)

    @base.remotable_classmethod
    async def event_finish(
        cls: type[InstanceActionEvent],
        context: RequestContext,
        instance_uuid: str,
        event_name: str,
        result: str = RESULT_SUCCESS,
        traceback: str | None = None,
        request_id: str | None = None,
        details: str | None = None,
    ) -> InstanceActionEvent:
        """Close the newest event ``event_name`` of the request's action; an
        "Error" result marks the action failed too."""
        row = await backend.get().action_event_finish(
            context,
            instance_uuid=instance_uuid,
            request_id=request_id or context.request_id,
            event=event_name,
            result=result,
            traceback=traceback,
            details=details,
        )
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_by_action(
        cls: type[InstanceActionEvent], context: RequestContext, action_id: int
    ) -> list[InstanceActionEvent]:
        """The events of an action, oldest first."""
        rows = await backend.get().action_events_get(context, action_id)
        return [cls._from_db(row) for row in rows]
