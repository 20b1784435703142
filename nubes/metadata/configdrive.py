"""The config drive: the metadata as an ISO 9660 volume labelled ``config-2``.

The alternative to the metadata service for guests without a route to
169.254.169.254 (``--config-drive true``, or ``[DEFAULT]
force_config_drive`` on the host). The compute host builds it from the
:class:`~nubes.objects.instance_metadata.InstanceMetadata` the conductor
gives it for its own instance, with the files Nova's config drive has:

- ``openstack/<version>/meta_data.json``, ``network_data.json``,
  ``vendor_data.json``, ``vendor_data2.json``, ``user_data`` (when set);
- ``ec2/<version>/meta-data.json`` (the EC2 meta-data tree as one JSON
  object) and ``ec2/<version>/user-data``;
- the personality files of the build or rebuild that makes the drive:
  ``openstack/content/0000`` ..., named in ``meta_data.json``'s ``files``.

Written with pycdlib (pure Python: no genisoimage on the hosts), with
Joliet and Rock Ridge names so the guest sees the long file names.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import msgspec
import pycdlib

from nubes import exception
from nubes.injected_files import InjectedFiles
from nubes.metadata import content
from nubes.objects.instance_metadata import InstanceMetadata

#: The volume label cloud-init and Nova's guests look for.
LABEL = "config-2"


@dataclasses.dataclass(frozen=True)
class ConfigDrive:
    """The drive's files: path (``openstack/latest/meta_data.json``) -> bytes."""

    #: Left out of ``repr``: user data and personality files are a user's.
    files: dict[str, bytes] = dataclasses.field(repr=False)

    def write_iso(self, path: Path) -> None:
        """Write the ISO 9660 image to ``path`` (blocking: run it in a thread).

        The plain ISO 9660 names are made up (``D<n>``, ``F<n>``: they only
        have to be unique); guests read the Rock Ridge and Joliet names,
        which are the real ones.
        """
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
        dirs: dict[str, str] = {"": ""}
        try:
            for index, (name, data) in enumerate(sorted(self.files.items())):
                parts = name.split("/")
                for depth in range(1, len(parts)):
                    directory = "/".join(parts[:depth])
                    if directory not in dirs:
                        parent = dirs["/".join(parts[: depth - 1])]
                        dirs[directory] = f"{parent}/D{len(dirs)}"
                        iso.add_directory(
                            dirs[directory], rr_name=parts[depth - 1], joliet_path="/" + directory
                        )
                parent = dirs["/".join(parts[:-1])]
                iso.add_fp(
                    io.BytesIO(data),
                    len(data),
                    f"{parent}/F{index}.;1",
                    rr_name=parts[-1],
                    joliet_path="/" + name,
                )
            iso.write(str(path))
        finally:
            iso.close()

    def injected_files(self) -> InjectedFiles:
        """The personality files written on this drive, in their order, as
        ``meta_data.json`` names them (none: an empty set).

        What a live migration's source reads back to give the destination's
        drive the same files: they are nowhere else by then (never stored
        with the instance). A drive that names a content it lacks, or whose
        ``meta_data.json`` is not Nova's shape, is an error
        (:class:`~nubes.exception.Invalid`), never files quietly dropped.
        """
        raw = self.files.get(f"openstack/{content.LATEST}/meta_data.json")
        if raw is None:
            return InjectedFiles()
        try:
            listed = msgspec.json.decode(raw, type=_MetaDataFiles).files
        except msgspec.DecodeError as exc:  # not JSON, or not its shape
            raise exception.Invalid(reason=f"the config drive's meta_data.json: {exc}") from None
        found = []
        for entry in listed:
            data = self.files.get(f"openstack{entry.content_path}")
            if data is None:
                raise exception.Invalid(
                    reason="the config drive's meta_data.json names a content it lacks"
                )
            found.append((entry.path, data))
        return InjectedFiles.of(found)


class _ListedFile(msgspec.Struct, frozen=True):
    """One entry of ``meta_data.json``'s ``files`` (:func:`content.meta_data`)."""

    path: str
    content_path: str


class _MetaDataFiles(msgspec.Struct, frozen=True):
    """What :meth:`ConfigDrive.injected_files` reads of ``meta_data.json``."""

    files: tuple[_ListedFile, ...] = ()


def build(meta: InstanceMetadata, injected: InjectedFiles | None = None) -> ConfigDrive:
    """The drive's files for ``meta``, every version as Nova writes them, with
    the personality files ``injected`` (``openstack/content/...``)."""
    files: dict[str, bytes] = {}
    openstack = content.tree(meta, injected)["openstack"]
    assert isinstance(openstack, dict)
    # The versions' directories, and the personality files' content directory.
    for version, entries in openstack.items():
        assert isinstance(entries, dict)
        for name, data in entries.items():
            assert isinstance(data, bytes)
            files[f"openstack/{version}/{name}"] = data
    ec2 = json.dumps(content.ec2_json(meta)).encode()
    user_data = content.user_data(meta)
    for version in (*content.EC2_VERSIONS, content.LATEST):
        files[f"ec2/{version}/meta-data.json"] = ec2
        if user_data is not None:
            files[f"ec2/{version}/user-data"] = user_data
    return ConfigDrive(files)


def read_drive(path: Path) -> ConfigDrive:
    """The config drive an ISO image at ``path`` holds (blocking: run it in a thread)."""
    return ConfigDrive(read_iso(path)[1])


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    """The volume label and every file (by Rock Ridge path) of an ISO image (for tests
    and operators checking what a guest was given)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for root, _, names in iso.walk(rr_path="/"):
            for name in names:
                full = f"{root.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=full)
                files[full.lstrip("/")] = out.getvalue()
        return label, files
    finally:
        iso.close()
