"""Image grants (nubes/grants.py): a compute host downloads one image, and nothing else.

The security cases of docs/security.md ("a compute host is compromised"):
a grant for image A does not fetch image B; an expired or forged grant is
refused (401/403); the grant opens no other path of any API; and the host's
HTTP image source fetches over a real socket with the grant, its bytes
checked against the image's sha512.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from nubes import exception, grants
from nubes.api.server import bind_socket
from nubes.compute.snapshots import ImageUploader
from nubes.compute.virt.libvirt.imagecache import HttpImageSource, ImageCache
from tests.unit.api.conftest import ApiHarness

URL = "/image/v2/images"
SECRET = "controllers-only-secret"


async def _image(api: ApiHarness, data: bytes) -> dict[str, str]:
    async with await api.login("demo") as c:
        body = {"name": "img", "disk_format": "raw", "container_format": "bare"}
        r = await c.post(URL, json=body)
        image = r.json()
        r = await c.put(
            f"{URL}/{image['id']}/file",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204
        return dict((await c.get(f"{URL}/{image['id']}")).json())


@pytest.fixture
async def two(api: ApiHarness) -> AsyncIterator[tuple[ApiHarness, dict[str, str], dict[str, str]]]:
    api.state.conf.set_override("image_grant_secret", SECRET)
    yield api, await _image(api, b"A" * 3000), await _image(api, b"B" * 2000)


def test_a_grant_names_its_image_and_host_and_expires() -> None:
    token = grants.issue(SECRET, "img-a", "host-1", ttl=60, now=1000)
    assert grants.verify(SECRET, token, "img-a", now=1059) == "host-1"
    with pytest.raises(exception.Forbidden, match="expired"):
        grants.verify(SECRET, token, "img-a", now=1061)
    with pytest.raises(exception.Forbidden, match="another image"):
        grants.verify(SECRET, token, "img-b", now=1000)
    with pytest.raises(exception.NotAuthenticated):
        grants.verify("another-secret", token, "img-a", now=1000)
    payload, _, signature = token.partition(".")
    # A payload changed (another image, host or expiry) no longer matches its signature.
    forged = grants.issue("forger", "img-a", "host-1", ttl=10**6, now=1000).split(".")[0]
    for bad in (f"{forged}.{signature}", payload, f"{payload}.", "", "x.y.z", f"{payload}.AAAA"):
        with pytest.raises(exception.NotAuthenticated):
            grants.verify(SECRET, bad, "img-a", now=1000)
    with pytest.raises(exception.ConfigError):
        grants.issue(None, "img-a", "host-1", ttl=60)
    with pytest.raises(exception.NotAuthenticated):
        grants.verify("", token, "img-a")


def test_attach_grants_the_image_and_its_kernel_and_ramdisk_to_one_host() -> None:
    meta = {"id": "root", "properties": {"kernel_id": "k", "ramdisk_id": "r"}}
    sent = grants.attach(meta, "host-1", SECRET, ttl=60)
    assert set(sent[grants.META_KEY]) == {"root", "k", "r"}
    for image_id, token in sent[grants.META_KEY].items():
        assert grants.verify(SECRET, token, image_id) == "host-1"
    assert grants.attach(meta, "host-1", None, ttl=60) is meta  # no secret, no grants


async def test_a_grant_fetches_its_image_only(
    two: tuple[ApiHarness, dict[str, str], dict[str, str]],
) -> None:
    api, a, b = two
    grant_a = grants.issue(SECRET, a["id"], "host-1", ttl=60)
    async with api.client() as c:
        header = {grants.HEADER: grant_a}
        r = await c.get(f"{URL}/{a['id']}/file", headers=header)
        assert r.status_code == 200 and r.content == b"A" * 3000
        r = await c.get(f"{URL}/{b['id']}/file", headers=header)
        assert r.status_code == 403, r.text
        expired = grants.issue(SECRET, a["id"], "host-1", ttl=60, now=time.time() - 120)
        r = await c.get(f"{URL}/{a['id']}/file", headers={grants.HEADER: expired})
        assert r.status_code == 403, r.text
        forged = grants.issue("not-the-secret", a["id"], "host-1", ttl=60)
        r = await c.get(f"{URL}/{a['id']}/file", headers={grants.HEADER: forged})
        assert r.status_code == 401, r.text
        r = await c.get(f"{URL}/{a['id']}/file", headers={grants.HEADER: "garbage"})
        assert r.status_code == 401, r.text
        # The grant opens no other request: not the image's record, not its
        # upload or deletion, not the list, nor any other service.
        for method, path in (
            ("GET", f"{URL}/{a['id']}"),
            ("DELETE", f"{URL}/{a['id']}"),
            ("GET", URL),
            ("GET", "/compute/v2.1/servers"),
            ("GET", "/identity/v3/projects"),
        ):
            r = await c.request(method, path, headers=header)
            assert r.status_code == 401, (method, path, r.text)
        # A download grant does not upload (an upload grant would be needed).
        r = await c.put(f"{URL}/{a['id']}/file", content=b"x", headers=header)
        assert r.status_code == 403 and "upload" in r.text, r.text
        # Without the secret configured no grant is worth anything.
        api.state.conf.set_override("image_grant_secret", None)
        r = await c.get(f"{URL}/{a['id']}/file", headers=header)
        assert r.status_code == 401, r.text
    async with await api.login("demo") as c:
        assert (await c.get(f"{URL}/{a['id']}")).status_code == 200  # the record was untouched


async def test_the_hosts_http_source_fetches_with_its_grant_over_a_socket(
    two: tuple[ApiHarness, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    api, a, b = two
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # The socket already listens: a connection waits until uvicorn accepts it.
        source = HttpImageSource(f"http://127.0.0.1:{port}/image", "host-1", timeout=10)
        cache = ImageCache(tmp_path / "instances", source, "host-1")
        grant_a = grants.issue(SECRET, a["id"], "host-1", ttl=60)
        path = await cache.get(a["id"], a["os_hash_value"], grant_a)
        assert path.read_bytes() == b"A" * 3000
        # The grant for A does not fetch B; no grant fetches nothing; a wrong
        # checksum keeps the bytes out of the cache.
        with pytest.raises(exception.ImageFetchFailed, match="403"):
            await cache.get(b["id"], b["os_hash_value"], grant_a)
        with pytest.raises(exception.ImageFetchFailed, match="no grant"):
            await cache.get(b["id"], b["os_hash_value"], None)
        grant_b = grants.issue(SECRET, b["id"], "host-1", ttl=60)
        wrong = hashlib.sha512(b"other").hexdigest()
        with pytest.raises(exception.ImageFetchFailed, match="sha512"):
            await cache.get(b["id"], wrong, grant_b)
        assert [p.name for p in cache.entries()] == [a["id"]]
    finally:
        server.should_exit = True
        await serving


async def _queued(api: ApiHarness) -> dict[str, str]:
    async with await api.login("demo") as c:
        body = {"name": "snap", "disk_format": "raw", "container_format": "bare"}
        return dict((await c.post(URL, json=body)).json())


def test_an_upload_grant_is_not_a_download_grant_nor_the_reverse() -> None:
    up = grants.issue_upload(SECRET, "img-a", "host-1", ttl=60, now=1000)
    assert grants.verify_upload(SECRET, up, "img-a", now=1000) == "host-1"
    with pytest.raises(exception.Forbidden, match="read"):
        grants.verify(SECRET, up, "img-a", now=1000)
    down = grants.issue(SECRET, "img-a", "host-1", ttl=60, now=1000)
    with pytest.raises(exception.Forbidden, match="upload"):
        grants.verify_upload(SECRET, down, "img-a", now=1000)
    with pytest.raises(exception.Forbidden, match="another image"):
        grants.verify_upload(SECRET, up, "img-b", now=1000)
    with pytest.raises(exception.Forbidden, match="expired"):
        grants.verify_upload(SECRET, up, "img-a", now=1061)
    with pytest.raises(exception.NotAuthenticated):
        grants.verify_upload(None, up, "img-a", now=1000)


async def test_an_upload_grant_writes_its_queued_image_only(
    two: tuple[ApiHarness, dict[str, str], dict[str, str]],
) -> None:
    """A host snapshotting a guest (createImage) may write the data of the one
    queued image the conductor granted it, and nothing else: not another
    image (queued or active), not after the grant expired, not a read."""
    api, a, _b = two
    mine, other = await _queued(api), await _queued(api)
    grant = grants.issue_upload(SECRET, mine["id"], "host-1", ttl=60)
    header = {grants.HEADER: grant, "Content-Type": "application/octet-stream"}
    async with api.client() as c:
        for target in (other["id"], a["id"]):
            r = await c.put(f"{URL}/{target}/file", content=b"evil", headers=header)
            assert r.status_code == 403, r.text
        expired = grants.issue_upload(SECRET, mine["id"], "host-1", ttl=60, now=time.time() - 120)
        r = await c.put(
            f"{URL}/{mine['id']}/file", content=b"late", headers={grants.HEADER: expired}
        )
        assert r.status_code == 403, r.text
        r = await c.get(f"{URL}/{mine['id']}/file", headers={grants.HEADER: grant})
        assert r.status_code == 403, r.text
        r = await c.put(f"{URL}/{mine['id']}/file", content=b"D" * 1234, headers=header)
        assert r.status_code == 204, r.text
        # Once active, the same grant cannot overwrite it.
        r = await c.put(f"{URL}/{mine['id']}/file", content=b"again", headers=header)
        assert r.status_code == 409, r.text
    async with await api.login("demo") as c:
        shown = (await c.get(f"{URL}/{mine['id']}")).json()
        assert shown["status"] == "active" and shown["size"] == 1234
        assert shown["checksum"] == hashlib.md5(b"D" * 1234, usedforsecurity=False).hexdigest()
        assert (await c.get(f"{URL}/{other['id']}")).json()["status"] == "queued"
        assert (await c.get(f"{URL}/{a['id']}/file")).content == b"A" * 3000


async def test_the_hosts_uploader_sends_a_snapshot_with_its_grant_over_a_socket(
    two: tuple[ApiHarness, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    api, _a, _b = two
    mine, other = await _queued(api), await _queued(api)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        uploader = ImageUploader(f"http://127.0.0.1:{port}/image", "host-1", timeout=10)
        disk = tmp_path / "disk"
        disk.write_bytes(b"S" * 5000)
        grant = grants.issue_upload(SECRET, mine["id"], "host-1", ttl=60)
        with pytest.raises(exception.ImageUploadFailed, match="403"):
            await uploader.upload(other["id"], disk, grant)
        await uploader.upload(mine["id"], disk, grant)
    finally:
        server.should_exit = True
        await serving
    async with await api.login("demo") as c:
        assert (await c.get(f"{URL}/{mine['id']}/file")).content == b"S" * 5000
        assert (await c.get(f"{URL}/{other['id']}")).json()["status"] == "queued"
