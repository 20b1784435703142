"""The conductor's durable task engine and one module per long operation.

:mod:`.engine` claims and drives tasks; :mod:`.base` is what every kind
shares (steps, commits as lease owner, waiting for compute reports);
:mod:`.build`, :mod:`.delete` and :mod:`.power` are the kinds;
:mod:`.states` holds their step tables; :mod:`.reports` records what
compute hosts report. ``docs/tasks.md`` describes every task's steps and
rollbacks.
"""
