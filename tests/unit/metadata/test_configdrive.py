"""The config drive's contents with personality files (Nova's layout), and what
the metadata service shows of them (nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from nubes import exception
from nubes.injected_files import InjectedFile, InjectedFiles
from nubes.metadata import configdrive, content
from nubes.objects.instance_metadata import InstanceMetadata

UUID = "5b3b6c7e-1f0a-4a57-9a47-1d2a6f0f3c11"
FILES = InjectedFiles.of(
    [
        ("/etc/motd", b"welcome\n"),
        ("/usr/local/bin/tool", bytes(range(256))),
        ("/etc/motd", b"again"),
    ]
)


def _meta(**values: object) -> InstanceMetadata:
    return InstanceMetadata(uuid=UUID, name="vm", hostname="vm", project_id="p1", **values)


def test_personality_files_are_content_entries_listed_in_every_versions_meta_data() -> None:
    drive = configdrive.build(_meta(), FILES)
    # One content file per personality file, numbered in the order given
    # (a path given twice is two files, as Nova: the guest writes both in turn).
    assert drive.files["openstack/content/0000"] == b"welcome\n"
    assert drive.files["openstack/content/0001"] == bytes(range(256))
    assert drive.files["openstack/content/0002"] == b"again"
    assert sorted(n for n in drive.files if n.startswith("openstack/content/")) == [
        f"openstack/content/000{i}" for i in range(3)
    ]
    listed = [
        {"path": "/etc/motd", "content_path": "/content/0000"},
        {"path": "/usr/local/bin/tool", "content_path": "/content/0001"},
        {"path": "/etc/motd", "content_path": "/content/0002"},
    ]
    for version in (*content.OPENSTACK_VERSIONS, content.LATEST):
        meta = json.loads(drive.files[f"openstack/{version}/meta_data.json"])
        assert meta["files"] == listed
        assert meta["uuid"] == UUID
    # Nothing else moved: the EC2 tree has no personality files.
    assert not [n for n in drive.files if n.startswith("ec2/") and "content" in n]


def test_without_files_there_is_no_files_key_and_no_content_directory() -> None:
    for files in (None, InjectedFiles()):
        drive = configdrive.build(_meta(), files)
        assert "files" not in json.loads(drive.files["openstack/latest/meta_data.json"])
        assert not [n for n in drive.files if n.startswith("openstack/content/")]
    assert configdrive.build(_meta()).files == configdrive.build(_meta(), InjectedFiles()).files


def test_the_iso_holds_the_files_byte_for_byte(tmp_path: Path) -> None:
    drive = configdrive.build(_meta(user_data="aGk="), FILES)
    iso = tmp_path / "disk.config"
    drive.write_iso(iso)
    label, files = configdrive.read_iso(iso)
    assert label == configdrive.LABEL
    assert files == drive.files
    assert files["openstack/content/0001"] == bytes(range(256))


def test_a_written_drive_gives_back_its_files_in_order(tmp_path: Path) -> None:
    # What a live migration's source reads for the destination's drive.
    drive = configdrive.build(_meta(), FILES)
    iso = tmp_path / "disk.config"
    drive.write_iso(iso)
    assert configdrive.read_drive(iso).injected_files() == FILES
    assert configdrive.build(_meta()).injected_files() == InjectedFiles()
    assert configdrive.ConfigDrive({}).injected_files() == InjectedFiles()


def test_a_drive_naming_what_it_lacks_is_an_error_not_fewer_files() -> None:
    files = dict(configdrive.build(_meta(), FILES).files)
    del files["openstack/content/0001"]
    with pytest.raises(exception.Invalid):
        configdrive.ConfigDrive(files).injected_files()
    files["openstack/latest/meta_data.json"] = b'{"files": [{"path": 1}]}'
    with pytest.raises(exception.Invalid):
        configdrive.ConfigDrive(files).injected_files()
    files["openstack/latest/meta_data.json"] = b"not json"
    with pytest.raises(exception.Invalid):
        configdrive.ConfigDrive(files).injected_files()


def test_the_metadata_service_serves_no_personality_file() -> None:
    # The service renders the instance's metadata alone (it never has the
    # files, as Nova's): no content directory, no "files" list.
    meta = _meta()
    assert content.lookup(meta, "/openstack/content/0000") is None
    assert content.lookup(meta, "/openstack/content") is None
    listing = content.lookup(meta, "/openstack")
    assert listing is not None and b"content" not in listing
    doc = content.lookup(meta, "/openstack/latest/meta_data.json")
    assert doc is not None and "files" not in json.loads(doc)


def test_files_travel_as_one_struct_and_come_back_the_same() -> None:
    # What the RPC layer (msgpack) and a task payload (JSON builtins) make of them.
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(FILES))
    assert msgspec.convert(wire, InjectedFiles) == FILES
    stored = json.loads(json.dumps(msgspec.to_builtins(FILES)))
    assert msgspec.convert(stored, InjectedFiles, strict=False) == FILES


def test_no_repr_shows_a_files_path_or_contents() -> None:
    secret = InjectedFiles(files=(InjectedFile(path="/root/.secret-path", contents=b"s3cr3t"),))
    drive = configdrive.build(_meta(), secret)
    for shown in (repr(secret), repr(secret.files[0]), repr(drive), str(secret)):
        assert "s3cr3t" not in shown and "secret-path" not in shown, shown
    assert repr(secret) == "InjectedFiles(<1 files>)"
    assert not InjectedFiles() and secret
