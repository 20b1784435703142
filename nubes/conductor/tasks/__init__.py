"""The conductor's durable task engine and one module per long operation.

:mod:`.engine` claims and drives tasks; :mod:`.base` is what every kind
shares (steps, commits as lease owner, waiting for compute reports);
:mod:`.build`, :mod:`.delete`, :mod:`.power`, :mod:`.migrate`,
:mod:`.confirm_revert`, :mod:`.live_migrate`, :mod:`.rebuild` and
:mod:`.remove_guest` are the kinds; :mod:`.payloads` types each kind's
payload (versioned msgspec structs); :mod:`.states` holds their step
tables; :mod:`.reports` records what compute hosts report. A kind's
:class:`~.base.Task` class registers itself with ``@task_kind``.
``docs/tasks.md`` describes every task's steps and rollbacks.
"""
