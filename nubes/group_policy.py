"""Server group policies: Nova's names and defaults, one home for every layer.

The API validates them, ``RequestSpec`` carries them to the scheduler and
``nubes.db.api.group_claims`` enforces them in the claim; each imports them
from here, so none of those layers needs to import another to agree on them.
"""

from __future__ import annotations

AFFINITY = "affinity"
ANTI_AFFINITY = "anti-affinity"
SOFT_AFFINITY = "soft-affinity"
SOFT_ANTI_AFFINITY = "soft-anti-affinity"
#: Server group policies the scheduler understands (Nova's names).
GROUP_POLICIES = (AFFINITY, ANTI_AFFINITY, SOFT_AFFINITY, SOFT_ANTI_AFFINITY)
#: Policies a claim enforces (the soft ones only weigh hosts).
HARD_POLICIES = (AFFINITY, ANTI_AFFINITY)
#: Nova's default ``max_server_per_host`` rule of an anti-affinity group.
DEFAULT_MAX_SERVER_PER_HOST = 1
