"""Versioned objects: what services send each other about the cloud's things.

Importing this package registers every object nubes defines, so a process
that decodes objects knows them all. :mod:`.base` declares objects and
remotable methods, :mod:`.fields` the field types, :mod:`.codec` the bytes,
:mod:`.indirection` the serving side of remotable calls, :mod:`.backend` the
database operations remotable methods run against (never the DB layer itself:
nothing here imports it).
"""

from nubes.objects import (  # noqa: F401  (they register)
    compute_node,
    flavor,
    instance,
    instance_action,
    instance_fault,
    instance_metadata,
    migration,
    request_spec,
    service,
)
