"""Least privilege on RabbitMQ: what each service's broker user may do.

The one home of the broker permissions and the shared topology each service
needs; ``nubes-manage broker`` applies them through the management HTTP API,
the crash suite imports them as definitions, and the README shows the same
thing as ``rabbitmqctl`` / ``rabbitmqadmin`` lines (:func:`commands`).

A **compute host** (user ``compute.<host>``) may:

- consume its own queue ``compute.<host>``, the shared ``compute`` queue and
  the exclusive, server-named queue (``amq.gen-...``) it binds to the
  ``compute_fanout`` exchange; exclusive queues are out of every other
  connection's reach, so ``amq.gen-...`` rights only ever reach its own;
- publish on the ``nubes`` exchange (requests and casts: who may call what is
  then the receiver's rule table, by the broker-verified ``user_id``) and on
  the default exchange (replies, through direct reply-to);
- nothing else: it cannot declare, bind, purge, delete or read any other
  queue (the conductor's, another host's), nor bind a queue to ``nubes`` to
  overhear a routing key, nor declare or delete an exchange. Its transport
  therefore only checks (passively) that the shared queues exist, which is
  why :func:`host_topology` is created for it by the operator.

Controllers (``conductor.<host>``, ``scheduler.<host>``, ``api.<host>``,
``manage.<host>``) are trusted with the whole virtual host: they declare the
topology they serve.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from nubes import access, exception
from nubes.rpc.rabbit_session import (
    EXCHANGE,
    EXCHANGE_TYPE,
    REPLY_PREFIX,
    fanout_exchange,
    queue_arguments,
)

#: Names RabbitMQ gives server-named queues (the fanout queue of a listener).
SERVER_NAMED = r"amq\.gen-.*"
COMPUTE_TOPIC = "compute"


@dataclass(frozen=True, slots=True)
class Permissions:
    """The three regular expressions RabbitMQ matches resource names against."""

    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class TopicPermissions:
    """Which routing keys a user may publish (write) and bind (read) on ``exchange``."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class Topology:
    """Exchanges (name, type) and queues (each bound to ``nubes`` by its own name)."""

    exchanges: tuple[tuple[str, str], ...]
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BrokerUser:
    name: str
    permissions: Permissions
    topology: Topology = field(default_factory=lambda: Topology((), ()))
    #: None: every routing key (RabbitMQ's default without topic permissions).
    topic: TopicPermissions | None = None


def _exactly(*names: str, patterns: tuple[str, ...] = ()) -> str:
    """A regex matching exactly ``names`` (literally) and ``patterns``."""
    return "^(" + "|".join([*(re.escape(n) for n in names), *patterns]) + ")$"


def _check_host(host: str) -> None:
    if not host or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", host):
        raise exception.ValidationError(field="host", reason=f"{host!r} is not a host name")


def host_topology(host: str, conductor_topic: str = "conductor") -> Topology:
    """What must exist before compute host ``host`` starts (it may not declare it)."""
    return Topology(
        exchanges=((EXCHANGE, EXCHANGE_TYPE), (fanout_exchange(COMPUTE_TOPIC), "fanout")),
        queues=(COMPUTE_TOPIC, f"{COMPUTE_TOPIC}.{host}", conductor_topic),
    )


def host_user(host: str, conductor_topic: str = "conductor") -> BrokerUser:
    """Compute host ``host``'s broker user ``compute.<host>``: its own queues, nothing more."""
    _check_host(host)
    own = f"{COMPUTE_TOPIC}.{host}"
    permissions = Permissions(
        # Its own queue and the exclusive fanout queue it declares itself.
        configure=_exactly(own, patterns=(SERVER_NAMED,)),
        # Publish on EXCHANGE (the routing keys: below) and bind its own
        # queues; never bind or write to another named queue, nor publish on
        # the default exchange.
        write=_exactly(EXCHANGE, own, patterns=(SERVER_NAMED,)),
        # Consume its queues; read EXCHANGE (its own key: below) and the
        # fanout exchange to bind to them.
        read=_exactly(
            own, COMPUTE_TOPIC, EXCHANGE, fanout_exchange(COMPUTE_TOPIC), patterns=(SERVER_NAMED,)
        ),
    )
    topic = TopicPermissions(
        EXCHANGE,
        # Never the notifications topic: only controllers publish there (a
        # host's notifications go through the conductor, which checks them).
        write=_exactly(conductor_topic, patterns=(re.escape(REPLY_PREFIX) + SERVER_NAMED,)),
        read=_exactly(own),
    )
    return BrokerUser(
        f"{COMPUTE_TOPIC}.{host}",
        permissions,
        host_topology(host, conductor_topic),
        topic,
    )


def controller_user(identity: str) -> BrokerUser:
    """A controller's broker user (``conductor.<host>`` ...): the whole virtual host."""
    if access.identify_kind(identity) is not access.CallerKind.CONTROLLER:
        raise exception.ValidationError(
            field="identity",
            reason=f"{identity!r} is not conductor.<host>, scheduler.<host>, api.<host> "
            "or manage.<host>",
        )
    return BrokerUser(identity, Permissions(".*", ".*", ".*"))


def definitions(
    vhost: str, users: list[BrokerUser], password: str, *, quorum: bool = False
) -> dict[str, Any]:
    """The users, permissions and topology as a RabbitMQ definitions document.

    ``quorum``: the queues are quorum queues, as the services declare them
    (see :func:`~nubes.rpc.rabbit_session.wants_quorum`).
    """
    exchanges = {e for u in users for e in u.topology.exchanges}
    queues = sorted({q for u in users for q in u.topology.queues})
    return {
        "users": [{"name": u.name, "password": password, "tags": ""} for u in users],
        "permissions": [
            {
                "user": u.name,
                "vhost": vhost,
                "configure": u.permissions.configure,
                "write": u.permissions.write,
                "read": u.permissions.read,
            }
            for u in users
        ],
        "topic_permissions": [
            {
                "user": u.name,
                "vhost": vhost,
                "exchange": u.topic.exchange,
                "write": u.topic.write,
                "read": u.topic.read,
            }
            for u in users
            if u.topic is not None
        ],
        "exchanges": [
            {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in sorted(exchanges)
        ],
        "queues": [
            {
                "name": q,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": queue_arguments(quorum),
            }
            for q in queues
        ],
        "bindings": [
            {
                "source": EXCHANGE,
                "vhost": vhost,
                "destination": q,
                "destination_type": "queue",
                "routing_key": q,
                "arguments": {},
            }
            for q in queues
        ],
    }


def commands(
    user: BrokerUser, vhost: str = "/", password: str = "PASSWORD", *, quorum: bool = False
) -> list[str]:
    """The same as ``rabbitmqctl`` (user, permissions) and ``rabbitmqadmin`` (topology) lines."""
    q = shlex.quote
    p = user.permissions
    lines = [
        f"rabbitmqctl add_user {q(user.name)} {q(password)}",
        f"rabbitmqctl set_permissions -p {q(vhost)} {q(user.name)} "
        f"{q(p.configure)} {q(p.write)} {q(p.read)}",
    ]
    if user.topic is not None:
        t = user.topic
        lines.append(
            f"rabbitmqctl set_topic_permissions -p {q(vhost)} {q(user.name)} "
            f"{q(t.exchange)} {q(t.write)} {q(t.read)}"
        )
    for name, kind in user.topology.exchanges:
        lines.append(
            f"rabbitmqadmin -V {q(vhost)} declare exchange name={q(name)} type={kind} durable=true"
        )
    for queue in user.topology.queues:
        # rabbitmqadmin takes queue arguments as one JSON word.
        args = f" arguments={q(json.dumps(queue_arguments(True)))}" if quorum else ""
        lines.append(
            f"rabbitmqadmin -V {q(vhost)} declare queue name={q(queue)} durable=true{args}"
        )
        lines.append(
            f"rabbitmqadmin -V {q(vhost)} declare binding source={EXCHANGE} "
            f"destination={q(queue)} routing_key={q(queue)}"
        )
    return lines
