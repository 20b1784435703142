"""The scheduler: a queried service that filters, weighs and claims.

:mod:`.rpcapi` is what other services import; :mod:`.manager` serves it;
:mod:`.selector` holds the algorithm, :mod:`.host_state` the in-memory view
of the hosts, :mod:`.claims` the database claims, :mod:`.policies` the named
policies, and :mod:`.filters` / :mod:`.weighers` one small class each.
"""
