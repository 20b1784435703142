"""Versioned objects: what services send each other about the cloud's things.

Importing this package registers every object nubes defines, so a process
that decodes objects knows them all. :mod:`.base` declares objects and
remotable methods, :mod:`.fields` the field types, :mod:`.codec` the bytes,
:mod:`.indirection` the serving side of remotable calls.
"""

from nubes.objects import flavor, instance, instance_fault  # noqa: F401  (they register)
