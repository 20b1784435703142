"""The DB contract suite of tests/unit/db, collected again here for PostgreSQL and MariaDB.

The ``backend`` fixture of this directory's conftest decides where the
imported tests run; nothing is redefined. (tests/unit/db/test_engine.py is
SQLite plumbing and stays out.)
"""

from __future__ import annotations

from tests.unit.db.test_archive import *  # noqa: F403
from tests.unit.db.test_compute_nodes import *  # noqa: F403
from tests.unit.db.test_constraints import *  # noqa: F403
from tests.unit.db.test_floating_ipam import *  # noqa: F403
from tests.unit.db.test_group_claims import *  # noqa: F403
from tests.unit.db.test_grouped_writes import *  # noqa: F403
from tests.unit.db.test_identity_domains import *  # noqa: F403
from tests.unit.db.test_identity_roles import *  # noqa: F403
from tests.unit.db.test_identity_tokens import *  # noqa: F403
from tests.unit.db.test_image_catalog import *  # noqa: F403
from tests.unit.db.test_instance_saves_in_place import *  # noqa: F403
from tests.unit.db.test_instances import *  # noqa: F403
from tests.unit.db.test_migrations import *  # noqa: F403
from tests.unit.db.test_network_ipam import *  # noqa: F403
from tests.unit.db.test_object_backend import *  # noqa: F403
from tests.unit.db.test_operations import *  # noqa: F403
from tests.unit.db.test_placement import *  # noqa: F403
from tests.unit.db.test_quotas import *  # noqa: F403
from tests.unit.db.test_replica import *  # noqa: F403
from tests.unit.db.test_resources import *  # noqa: F403
from tests.unit.db.test_tags import *  # noqa: F403
from tests.unit.db.test_tasks import *  # noqa: F403
from tests.unit.db.test_transaction_batch import *  # noqa: F403
