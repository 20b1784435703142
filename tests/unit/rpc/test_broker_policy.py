"""The broker policies of issue 18: prompt reconnection and quorum queues on a cluster."""

from __future__ import annotations

import pytest

from nubes import config
from nubes.rpc import rabbit_access
from nubes.rpc.rabbit import RabbitTransport
from nubes.rpc.rabbit_connection import DEFAULT_RECONNECT_BACKOFF_MAX, BrokerConnection
from nubes.rpc.rabbit_session import queue_arguments, wants_quorum
from nubes.rpc.transport import TransportURL

CLUSTER = "rabbit://u:p@h1:5672,u:p@h2:5673,u:p@h3:5674/vhost"


def test_reconnect_waits_at_most_a_second_between_rounds() -> None:
    # Back on the bus within ~2 s of the broker answering: a round of
    # attempts at most every second, however long the outage lasted.
    conf = config.new_config()
    conf([])
    assert conf.oslo_messaging_rabbit.reconnect_backoff_max == DEFAULT_RECONNECT_BACKOFF_MAX
    broker: BrokerConnection[object] = BrokerConnection(
        TransportURL.parse(CLUSTER),
        setup=None,
        lost=None,  # type: ignore[arg-type]
    )
    waits = [broker._backoff(rounds) for rounds in range(1, 60) for _ in range(20)]
    assert max(waits) <= 1.0
    assert min(waits) >= 0.2


@pytest.mark.parametrize(
    ("option", "url", "quorum"),
    [
        (None, CLUSTER, True),
        (None, "rabbit://u:p@h1:5672/", False),
        (False, CLUSTER, False),
        (True, "rabbit://u:p@h1:5672/", True),
    ],
)
def test_quorum_queues_by_default_on_a_cluster_only(
    option: bool | None, url: str, quorum: bool
) -> None:
    assert wants_quorum(option, len(TransportURL.parse(url).hosts)) is quorum
    transport = RabbitTransport(TransportURL.parse(url), quorum_queues=option)
    assert transport._quorum is quorum


def test_queues_made_for_the_operator_match_what_services_declare() -> None:
    user = rabbit_access.host_user("h1")
    defs = rabbit_access.definitions("/", [user], "pw", quorum=True)
    assert {q["name"] for q in defs["queues"]} == set(user.topology.queues)
    assert all(q["arguments"] == queue_arguments(True) for q in defs["queues"])
    assert queue_arguments(True) == {"x-queue-type": "quorum"}
    assert rabbit_access.definitions("/", [user], "pw")["queues"][0]["arguments"] == {}
    lines = rabbit_access.commands(user, quorum=True)
    declares = [line for line in lines if "declare queue" in line]
    assert declares
    assert all("""arguments='{"x-queue-type": "quorum"}'""" in line for line in declares)
