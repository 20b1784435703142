"""Image grants: a compute host's permission to download one image, for a while.

A compute host holds no general credential for the image API. When the
conductor sends a host a guest to build (or rebuild) it hands it, with the
image's metadata, one grant per image the guest needs (root disk, kernel,
ramdisk): a token naming the image, the host and an expiry, signed with
HMAC-SHA256 under ``[DEFAULT] image_grant_secret``, a secret only the
controllers (conductor and image API) are configured with. The image API
accepts a grant on ``GET /v2/images/{id}/file`` of that image only (header
:data:`HEADER`), and nowhere else.

Disk grants (:func:`issue_disk`) work alike for a cold migration's or a
resize's disk: the source makes a random key for that one migration and
reports it to the conductor, which signs a grant for the destination; the
source's disk server (nubes/compute/virt/libvirt/diskserver.py) serves that
instance's files to that grant only.

Upload grants (:func:`issue_upload`) let a host write the data of one image
it snapshots (createImage, createBackup): the conductor signs one for the
queued image the API recorded, for the instance's host only; the image API
takes it on ``PUT /v2/images/{id}/file`` of that image only. A download
grant does not open an upload, nor an upload grant a download: the claim
``"a"`` says which (absent: download, as every grant issued before uploads).

A token is ``<payload>.<signature>``, both URL-safe base64 without padding;
the payload is the JSON ``{"i": image id, "h": host, "e": expiry (epoch s)}``
(with ``"a": "upload"`` for an upload grant).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

from nubes import exception

#: The request header a grant travels in.
HEADER = "X-Image-Grant"
#: Where an image's metadata carries the grants the conductor issued for it.
META_KEY = "nubes_image_grants"
#: The request header a disk grant travels in (a cold migration's destination
#: fetching the instance's disk from the source).
DISK_HEADER = "X-Disk-Grant"
#: What a grant lets its host do with its image (the ``"a"`` claim).
READ = "read"
UPLOAD = "upload"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def _need_secret(secret: str | None) -> str:
    if not secret:
        raise exception.ConfigError(
            reason="[DEFAULT] image_grant_secret is not set: no image grant can be "
            "issued or checked (the controllers must share it)"
        )
    return secret


def _issue(
    key: str, subject: str, host: str, ttl: float, now: float | None, action: str = READ
) -> str:
    expiry = int((time.time() if now is None else now) + ttl)
    claims: dict[str, Any] = {"i": subject, "h": host, "e": expiry}
    if action != READ:
        # Read grants keep the shape they always had (older checkers read them).
        claims["a"] = action
    body = json.dumps(claims, separators=(",", ":"))
    payload = _b64(body.encode())
    return f"{payload}.{_sign(key, payload)}"


def _verify(
    key: str, token: str, subject: str, what: str, now: float | None, action: str = READ
) -> str:
    payload, _, signature = token.partition(".")
    if not payload or not signature or not hmac.compare_digest(_sign(key, payload), signature):
        raise exception.NotAuthenticated()
    try:
        claims: Any = json.loads(_unb64(payload))
        granted, host, expiry = str(claims["i"]), str(claims["h"]), float(claims["e"])
        granted_action = str(claims.get("a", READ))
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise exception.NotAuthenticated() from None
    if granted_action != action:
        raise exception.Forbidden(reason=f"the grant does not allow {action} of this {what}")
    if not hmac.compare_digest(granted, subject):
        raise exception.Forbidden(reason=f"the grant is for another {what} than {subject}")
    if expiry < (time.time() if now is None else now):
        raise exception.Forbidden(reason=f"the {what} grant has expired")
    return host


def issue(
    secret: str | None, image_id: str, host: str, ttl: float, now: float | None = None
) -> str:
    """A grant for ``host`` to download ``image_id`` for ``ttl`` seconds."""
    return _issue(_need_secret(secret), image_id, host, ttl, now)


def verify(secret: str | None, token: str, image_id: str, now: float | None = None) -> str:
    """The host a valid grant for ``image_id`` was issued to.

    A token that is malformed or not signed with ``secret`` is
    NotAuthenticated (401); a genuine grant for another image, or expired,
    is Forbidden (403). Without a secret configured no grant can be trusted:
    NotAuthenticated too.
    """
    if not secret:
        raise exception.NotAuthenticated()
    return _verify(secret, token, image_id, "image", now)


def issue_upload(
    secret: str | None, image_id: str, host: str, ttl: float, now: float | None = None
) -> str:
    """A grant for ``host`` to upload the data of ``image_id`` (a snapshot
    of one of its guests) for ``ttl`` seconds."""
    return _issue(_need_secret(secret), image_id, host, ttl, now, UPLOAD)


def verify_upload(secret: str | None, token: str, image_id: str, now: float | None = None) -> str:
    """The host a valid upload grant for ``image_id`` was issued to (errors
    as :func:`verify`; a download grant is Forbidden here)."""
    if not secret:
        raise exception.NotAuthenticated()
    return _verify(secret, token, image_id, "image", now, UPLOAD)


def issue_disk(
    key: str, instance_uuid: str, host: str, ttl: float, now: float | None = None
) -> str:
    """A grant for ``host`` to download the disk of ``instance_uuid`` from the
    source of a cold migration or resize, for ``ttl`` seconds.

    ``key`` is the one the source made for that one migration and reported
    to the conductor (``disk_info``); the conductor signs the grant and sends
    it to the destination only. The source checks it with :func:`verify_disk`.
    """
    return _issue(key, instance_uuid, host, ttl, now)


def verify_disk(key: str, token: str, instance_uuid: str, now: float | None = None) -> str:
    """The host a valid disk grant for ``instance_uuid`` was issued to
    (errors as :func:`verify`)."""
    return _verify(key, token, instance_uuid, "instance", now)


def disk_info_for(
    disk_info: dict[str, Any], instance_uuid: str, host: str, ttl: float
) -> dict[str, Any]:
    """A cold migration's ``disk_info`` as its destination ``host`` gets it: a
    grant signed with the source's key instead of the key itself (unchanged
    when the source made no key: a driver that moves no files over the network)."""
    key = disk_info.get("key")
    if not key:
        return disk_info
    sent = {k: v for k, v in disk_info.items() if k != "key"}
    sent["grant"] = issue_disk(str(key), instance_uuid, host, ttl)
    return sent


def image_ids(image_meta: dict[str, Any]) -> list[str]:
    """The images a guest built from ``image_meta`` needs: the image and the
    kernel and ramdisk its properties name (booted directly, as Nova does)."""
    properties = image_meta.get("properties") or {}
    ids = [image_meta.get("id"), properties.get("kernel_id"), properties.get("ramdisk_id")]
    return [str(i) for i in ids if i]


def attach(image_meta: dict[str, Any], host: str, secret: str | None, ttl: float) -> dict[str, Any]:
    """``image_meta`` with grants for ``host`` to fetch each image it needs.

    Without a secret the metadata goes as it is: a host using the image API's
    directory (``[libvirt] image_source = directory``) or the fake driver
    needs none, and a host that does fails its fetch with the reason.
    """
    if not secret:
        return image_meta
    grants = {i: issue(secret, i, host, ttl) for i in image_ids(image_meta)}
    return {**image_meta, META_KEY: grants}
