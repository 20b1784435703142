"""The migration status machine of every migration type, walked whole.

Each type's table must be a machine a move can finish: every status it uses
is reachable from the first one, every non-final status can still reach a
final one, and ``check_migration_status`` allows exactly the table's edges.
"""

from __future__ import annotations

from collections import deque

import pytest

from nubes import exception
from nubes.objects.states import (
    MIGRATION_FINAL,
    MIGRATION_FIRST_STATUS,
    MIGRATION_TRANSITIONS,
    MigrationStatus,
    MigrationType,
    check_migration_status,
)


def _reachable(kind: MigrationType, start: MigrationStatus) -> set[MigrationStatus]:
    table = MIGRATION_TRANSITIONS[kind]
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in table[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


@pytest.mark.parametrize("kind", list(MigrationType))
def test_every_type_has_a_table_and_a_first_status(kind: MigrationType) -> None:
    assert kind in MIGRATION_TRANSITIONS
    assert MIGRATION_FIRST_STATUS[kind] not in MIGRATION_FINAL


@pytest.mark.parametrize("kind", list(MigrationType))
def test_every_status_a_move_reaches_can_still_end(kind: MigrationType) -> None:
    used = _reachable(kind, MIGRATION_FIRST_STATUS[kind])
    # The walk reaches the success end and the failure end of the move.
    assert used & MIGRATION_FINAL - {MigrationStatus.ERROR}
    assert MigrationStatus.ERROR in used
    for status in used:
        if status in MIGRATION_FINAL:
            # Final is final, except evacuation's ``done``, which waits only
            # for the source host's cleanup.
            assert MIGRATION_TRANSITIONS[kind][status] <= {MigrationStatus.COMPLETED}
        else:
            assert _reachable(kind, status) & MIGRATION_FINAL, status


@pytest.mark.parametrize("kind", list(MigrationType))
def test_check_allows_exactly_the_tables_edges(kind: MigrationType) -> None:
    table = MIGRATION_TRANSITIONS[kind]
    for current in MigrationStatus:
        for target in MigrationStatus:
            if current == target or target in table[current]:
                check_migration_status(kind.value, current.value, target.value)
            else:
                with pytest.raises(exception.InvalidMigrationTransition):
                    check_migration_status(kind.value, current.value, target.value)
