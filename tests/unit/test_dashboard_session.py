"""The dashboard's session seal, its error messages and its charts (no server needed)."""

from __future__ import annotations

import time

import httpx
from cryptography.fernet import Fernet

from nubes.dashboard import charts
from nubes.dashboard.client import error_message
from nubes.dashboard.session import Sealer, Session, csrf_matches


def _session() -> Session:
    # A token long enough that a random Fernet string cannot hold it by chance
    # (a three-letter one did, now and then: the secrecy assertion flaked).
    return Session(TOKEN, "u1", "demo", "p1", "demo", ["member"])


TOKEN = "gAAAAB-the-users-keystone-token-0123456789"


def test_a_sealed_session_opens_with_its_key_only_and_only_while_fresh() -> None:
    key = Fernet.generate_key().decode()
    sealer = Sealer(key, ttl=60)
    sealed = sealer.seal(_session())
    assert TOKEN not in sealed
    opened = sealer.open(sealed)
    assert opened is not None and opened.token == TOKEN and not opened.is_admin
    assert Sealer(None, ttl=60).open(sealed) is None  # another key
    assert sealer.open(sealer.seal(_session(), at=time.time() - 120)) is None  # stale
    assert sealer.open(sealed[:-2] + "AA") is None  # forged
    assert sealer.open("") is None


def test_csrf_must_match_exactly() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches("abc", None)
    assert not csrf_matches("", "")


def test_error_messages_of_every_api_style() -> None:
    def msg(status: int, body: object) -> str:
        return error_message(httpx.Response(status, json=body))

    assert msg(400, {"badRequest": {"code": 400, "message": "Bad flavor"}}) == "Bad flavor"
    assert msg(401, {"error": {"code": 401, "message": "No token"}}) == "No token"
    assert msg(409, {"NeutronError": {"type": "X", "message": "In use"}}) == "In use"
    assert error_message(httpx.Response(502, text="gateway down")) == "gateway down"


def test_charts_escape_labels_and_clamp_fractions() -> None:
    usage = charts.Usage("<b>RAM</b>", 150, 100, " MiB")
    assert usage.fraction == 1.0 and usage.text == "150 of 100 MiB"
    assert "<b>" not in charts.bar(usage) and "&lt;b&gt;" in charts.bar(usage)
    assert charts.Usage("x", 3, -1).text == "3 of ∞"
    assert 'class="donut high"' in charts.donut(usage)
    # Services all up is a full bar in the good colour; one in ten up is the alarm.
    assert 'class="bar low"' in charts.bar(charts.Usage("up", 4, 4, full_is_good=True))
    assert 'class="bar high"' in charts.bar(charts.Usage("up", 1, 10, full_is_good=True))
