"""``nubes-manage broker`` against a real RabbitMQ management API.

The users it makes work as the services need, and no further: the host's
user serves its own queue and reaches the conductor, and is refused the
conductor's queue. Everything lives in a virtual host of its own, removed
afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import aiormq
import aiormq.exceptions
import pytest

from nubes.cmd import manage
from nubes.cmd.broker import BrokerAdmin
from nubes.rpc.rabbit_session import EXCHANGE
from nubes.rpc.transport import IncomingMessage, Target, get_transport
from tests import servers

MANAGEMENT = "http://127.0.0.1:15672"
PASSWORD = "nubes-broker-test"


@pytest.fixture
def vhost(rabbit_url: str) -> Iterator[tuple[str, list[str]]]:
    servers.require("rabbit-management")
    name = f"nubes-broker-{uuid.uuid4().hex[:8]}"
    admin = BrokerAdmin(MANAGEMENT, "guest", "guest")
    admin.add_vhost(name)
    users: list[str] = []
    try:
        yield name, users
    finally:
        for user in users:
            admin.delete_user(user)
        admin.delete_vhost(name)


async def test_nubes_manage_broker_makes_users_that_work_with_least_privilege(
    vhost: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, users = vhost
    run = uuid.uuid4().hex[:6]
    host, controller = f"cmp-{run}", f"conductor.ctl-{run}"
    conf = tmp_path / "nubes.conf"
    conf.write_text(f"[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:5672/{name}\n")
    users += [f"compute.{host}", controller]
    base = ["--config-file", str(conf), "broker"]
    common = ["--password", PASSWORD, "--management-url", MANAGEMENT]
    assert manage.main([*base, "add-controller", controller, *common]) == 0
    assert manage.main([*base, "add-host", host, *common]) == 0
    assert f"broker user compute.{host} on vhost {name}" in capsys.readouterr().out

    def url(user: str) -> str:
        return f"rabbit://{user}:{PASSWORD}@127.0.0.1:5672/{name}"

    compute = get_transport(url(f"compute.{host}"))
    ctl = get_transport(url(controller))
    await compute.connect()
    await ctl.connect()
    try:

        async def echo(msg: IncomingMessage) -> None:
            await msg.reply(b"re:" + msg.body)

        # The host serves its own queue and answers a controller's call (on
        # the controller's reply queue: it may not use the default exchange).
        await compute.listen("compute", host, echo)
        assert await ctl.call(Target("compute", server=host), b"hello", 10.0) == b"re:hello"
        # And reaches the conductor's queue (add-host made it too).
        await compute.cast(Target("conductor"), b"report")
        # But may not read it, nor publish with another service's routing key.
        conn = await aiormq.connect(f"amqp://compute.{host}:{PASSWORD}@127.0.0.1:5672/{name}")
        try:
            channel = await conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.basic_get("conductor")
            for exchange, key in (
                (EXCHANGE, "scheduler"),
                (EXCHANGE, "notifications"),
                ("", "conductor"),
            ):
                channel = await conn.channel(publisher_confirms=True)
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await channel.basic_publish(b"x", exchange=exchange, routing_key=key)
        finally:
            await conn.close()
    finally:
        await compute.close()
        await ctl.close()


def test_print_shows_the_rabbitmqctl_lines_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "nubes.conf"
    conf.write_text("[DEFAULT]\ntransport_url = rabbit://u:p@broker.invalid:5672/\n")
    assert manage.main(["--config-file", str(conf), "broker", "add-host", "cmp-1", "--print"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "rabbitmqctl add_user compute.cmp-1 PASSWORD"
    assert out[1] == (
        "rabbitmqctl set_permissions -p / compute.cmp-1 '^(compute\\.cmp\\-1|amq\\.gen-.*)$' "
        "'^(nubes_topic|compute\\.cmp\\-1|amq\\.gen-.*)$' "
        "'^(compute\\.cmp\\-1|compute|nubes_topic|compute_fanout|amq\\.gen-.*)$'"
    )
    assert out[2] == (
        "rabbitmqctl set_topic_permissions -p / compute.cmp-1 nubes_topic "
        "'^(conductor|reply\\.amq\\.gen-.*)$' '^(compute\\.cmp\\-1)$'"
    )
    assert "rabbitmqadmin -V / declare queue name=compute.cmp-1 durable=true" in out
