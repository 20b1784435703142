"""The disk server serves a leaving guest's files to the conductor's grant, and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from nubes import exception, grants
from nubes.compute.virt.libvirt import diskserver
from nubes.compute.virt.libvirt.diskserver import KEY_FILE, DiskServer


async def _get(url: str, grant: str, dest: Path) -> bool:
    return await asyncio.to_thread(diskserver.fetch, url, grant, dest, missing_ok=True)


async def test_only_the_granted_instance_files_are_served(tmp_path: Path) -> None:
    instances = tmp_path / "instances"
    leaving, staying = str(uuid.uuid4()), str(uuid.uuid4())
    for name in (leaving, staying):
        (instances / name).mkdir(parents=True)
        (instances / name / "disk").write_bytes(b"disk of " + name.encode())
        (instances / name / "kernel").write_bytes(b"kernel")
        (instances / name / "disk.local").write_bytes(b"ephemeral of " + name.encode())
        (instances / name / "disk.swap").write_bytes(b"swap")
    key = "k" * 43
    (instances / leaving / KEY_FILE).write_text(key)
    server = DiskServer(instances, "127.0.0.1")
    await server.start()
    try:
        grant = grants.issue_disk(key, leaving, "dest-host", 60)
        out = tmp_path / "out"
        assert await _get(f"{server.url}/{leaving}/disk", grant, out)
        assert out.read_bytes() == b"disk of " + leaving.encode()
        # Its ephemeral disk goes along (issue #15); swap is made anew at the destination.
        assert await _get(f"{server.url}/{leaving}/disk.local", grant, out)
        assert out.read_bytes() == b"ephemeral of " + leaving.encode()
        assert not await _get(f"{server.url}/{leaving}/disk.swap", grant, out)
        # The same grant opens no other instance, and no file beyond those a move needs.
        assert not await _get(f"{server.url}/{staying}/disk", grant, out)
        assert not await _get(f"{server.url}/{leaving}/kernel", grant, out)
        assert not await _get(f"{server.url}/{leaving}/{KEY_FILE}", grant, out)
        # A grant of another key, for another instance, or expired, is refused.
        forged = grants.issue_disk("x" * 43, leaving, "dest-host", 60)
        other = grants.issue_disk(key, staying, "dest-host", 60)
        expired = grants.issue_disk(key, leaving, "dest-host", -1)
        for bad in (forged, other, expired, "garbage"):
            with pytest.raises(exception.VirtDriverError, match=r"HTTP 40[13]"):
                await _get(f"{server.url}/{leaving}/disk", bad, out)
        # Confirmed or reverted: the key is gone and nothing is served any more.
        (instances / leaving / KEY_FILE).unlink()
        assert not await _get(f"{server.url}/{leaving}/disk", grant, out)
    finally:
        await server.stop()


def test_the_destination_gets_a_grant_never_the_key() -> None:
    info = {"url": "http://10.0.0.1:1/x", "key": "secret-key"}
    sent = grants.disk_info_for(info, "uuid-1", "dest", 60)
    assert "key" not in sent and sent["url"] == info["url"]
    assert grants.verify_disk("secret-key", sent["grant"], "uuid-1") == "dest"
    assert grants.disk_info_for({"disks": ["disk"]}, "uuid-1", "dest", 60) == {"disks": ["disk"]}
