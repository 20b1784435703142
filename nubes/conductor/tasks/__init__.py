"""The conductor's durable task engine and one module per long operation.

:mod:`.engine` claims and drives tasks; :mod:`.base` is what every kind
shares (steps, commits as lease owner, waiting for compute reports);
:mod:`.states` holds the kinds (``TaskKind`` is the list) and their step
tables. The kinds' modules: :mod:`.build`, :mod:`.delete`, :mod:`.power`
(stop, start, reboot), :mod:`.migrate` (cold migration and resize),
:mod:`.confirm_revert`, :mod:`.live_migrate`, :mod:`.rebuild` (rebuild and
evacuate) and :mod:`.remove_guest`. What the moves share is in
:mod:`.moves`; :mod:`.reports` records what compute hosts report,
:mod:`.live_requests` relays aborts and force-completes, :mod:`.autoconfirm`
confirms resizes nobody confirmed, :mod:`.caps` keeps the RPC caps in step.
``docs/tasks.md`` describes every task's steps and rollbacks.
"""
