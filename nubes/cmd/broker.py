"""``nubes-manage broker``: one broker user per service, with least privilege.

``add-host HOST`` creates the user ``compute.<HOST>`` with the permissions of
:func:`nubes.rpc.rabbit_access.host_user` and the queues and exchanges the
host needs (which it may not declare itself); ``add-controller IDENTITY``
creates a controller's user (``conductor.<host>`` ...) with the whole
virtual host. Both go through the RabbitMQ management HTTP API (the
``rabbitmq_management`` plugin); ``--print`` shows the equivalent
``rabbitmqctl`` / ``rabbitmqadmin`` lines instead of doing anything.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.rpc import rabbit_access
from nubes.rpc.rabbit_session import EXCHANGE, queue_arguments, wants_quorum
from nubes.rpc.transport import TransportURL

DEFAULT_MANAGEMENT_PORT = 15672


class BrokerAdmin:
    """The few calls of the RabbitMQ management HTTP API that create users and topology."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """The answer's JSON for a GET; None otherwise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/api{path}", data=data, method=method)
        req.add_header("Authorization", self._auth)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read()) if method == "GET" else None
        except urllib.error.HTTPError as exc:
            if method in ("DELETE", "GET") and exc.code == 404:
                return None
            detail = exc.read().decode(errors="replace")[:300]
            raise exception.ConfigError(
                reason=f"the broker's management API refused {method} {path}: {exc.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise exception.ConfigError(
                reason=f"cannot reach the broker's management API at {self.url}: {exc} "
                "(is the rabbitmq_management plugin enabled?)"
            ) from None

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def queue(self, vhost: str, name: str) -> dict[str, Any] | None:
        """Queue ``name`` with its depth, consumers and message rates; None if absent."""
        found = self._request("GET", f"/queues/{self._q(vhost)}/{self._q(name)}")
        return found if isinstance(found, dict) else None

    def add_vhost(self, vhost: str) -> None:
        self._request("PUT", f"/vhosts/{self._q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{self._q(vhost)}")

    def delete_user(self, name: str) -> None:
        self._request("DELETE", f"/users/{self._q(name)}")

    def add_user(
        self, vhost: str, user: rabbit_access.BrokerUser, password: str, *, quorum: bool = False
    ) -> None:
        """Create (or reset) ``user`` with exactly its permissions and its topology."""
        v, n = self._q(vhost), self._q(user.name)
        self._request("PUT", f"/users/{n}", {"password": password, "tags": ""})
        p = user.permissions
        self._request(
            "PUT",
            f"/permissions/{v}/{n}",
            {"configure": p.configure, "write": p.write, "read": p.read},
        )
        if user.topic is not None:
            t = user.topic
            self._request(
                "PUT",
                f"/topic-permissions/{v}/{n}",
                {"exchange": t.exchange, "write": t.write, "read": t.read},
            )
        for name, kind in user.topology.exchanges:
            self._request("PUT", f"/exchanges/{v}/{self._q(name)}", {"type": kind, "durable": True})
        for queue in user.topology.queues:
            self._request(
                "PUT",
                f"/queues/{v}/{self._q(queue)}",
                {"durable": True, "arguments": queue_arguments(quorum)},
            )
            self._request(
                "POST",
                f"/bindings/{v}/e/{self._q(EXCHANGE)}/q/{self._q(queue)}",
                {"routing_key": queue},
            )


def _default_management_url(conf: cfg.ConfigOpts) -> str:
    try:
        hosts = TransportURL.parse(conf.transport_url).hosts
    except exception.ConfigError:
        hosts = ()
    host = hosts[0].host if hosts and hosts[0].host else "127.0.0.1"
    return f"http://{host}:{DEFAULT_MANAGEMENT_PORT}"


def admin_from_args(conf: cfg.ConfigOpts, args: argparse.Namespace) -> BrokerAdmin:
    """The management API client the ``--management-url``/``--admin-*`` options name."""
    return BrokerAdmin(
        args.management_url or _default_management_url(conf),
        args.admin_user,
        args.admin_password or os.environ.get("NUBES_BROKER_ADMIN_PASSWORD", "guest"),
    )


def add_admin_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--management-url",
        help=f"RabbitMQ management API (default: http://<broker>:{DEFAULT_MANAGEMENT_PORT})",
    )
    p.add_argument("--admin-user", default="guest", help="a broker administrator")
    p.add_argument(
        "--admin-password",
        help="its password (default: $NUBES_BROKER_ADMIN_PASSWORD, else guest)",
    )


def vhost_of(conf: cfg.ConfigOpts, args: argparse.Namespace) -> str:
    """``--vhost``, else the transport_url's virtual host."""
    if args.vhost:
        return str(args.vhost)
    try:
        return TransportURL.parse(conf.transport_url).virtual_host or "/"
    except exception.ConfigError:
        return "/"


def _quorum(conf: cfg.ConfigOpts) -> bool:
    """Whether the services declare quorum queues: the queues made here must match."""
    try:
        brokers = len(TransportURL.parse(conf.transport_url).hosts)
    except exception.ConfigError:
        brokers = 1
    return wants_quorum(conf.oslo_messaging_rabbit.rabbit_quorum_queue, brokers)


def _apply(conf: cfg.ConfigOpts, args: argparse.Namespace, user: rabbit_access.BrokerUser) -> int:
    vhost = vhost_of(conf, args)
    quorum = _quorum(conf)
    if args.print:
        for line in rabbit_access.commands(user, vhost, args.password or "PASSWORD", quorum=quorum):
            print(line)
        return 0
    password = args.password or secrets.token_urlsafe(24)
    admin = admin_from_args(conf, args)
    admin.add_user(vhost, user, password, quorum=quorum)
    print(f"broker user {user.name} on vhost {vhost}")
    print(f"password: {password}")
    return 0


def _add_host(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    user = rabbit_access.host_user(args.host, conf.conductor.topic)
    return _apply(conf, args, user)


def _add_controller(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    return _apply(conf, args, rabbit_access.controller_user(args.identity))


def add_broker_commands(sub: Any) -> None:
    broker = sub.add_parser("broker", help="broker users with least privilege (RabbitMQ)")
    actions = broker.add_subparsers(dest="action", required=True)
    for name, handler, arg, helptext in (
        ("add-host", _add_host, "host", "a compute host's user compute.<HOST>"),
        (
            "add-controller",
            _add_controller,
            "identity",
            "a controller's user, e.g. conductor.ctl-1",
        ),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument(arg)
        p.add_argument("--password", help="the user's password (default: a random one, printed)")
        p.add_argument("--vhost", help="virtual host (default: the transport_url's)")
        add_admin_options(p)
        p.add_argument(
            "--print",
            action="store_true",
            help="print the equivalent rabbitmqctl/rabbitmqadmin lines; change nothing",
        )
        p.set_defaults(handler=handler, needs_config=True)
