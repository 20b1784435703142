"""Which services may use the scheduler: controllers only.

A compute host asking for claims could fill the cloud, and the hint list is
none of its business either; the conductor schedules and claims, the API
lists the hints. The RPC server checks this table before any method runs; a
method missing from it is refused to everyone
(``tests/unit/scheduler/test_authz.py`` walks it).
"""

from __future__ import annotations

from nubes import access

METHOD_RULES = access.rules(
    "scheduler",
    {
        (None, "select_destinations"): access.CONDUCTOR,
        (None, "claim_alternate"): access.CONDUCTOR,
        (None, "release"): access.CONDUCTOR,
        (None, "get_scheduler_hints"): access.CONTROLLERS,
    },
)
