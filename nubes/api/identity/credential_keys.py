"""The Fernet keys that encrypt stored credential blobs (Keystone's
credential key repository).

Keys are files named by number in ``[credential] key_repository``: the
highest number encrypts, every key decrypts, so an operator rotates by
adding a higher-numbered key and re-encrypting before removing the old one.
Each stored blob records the hash of the key that encrypted it
(``credentials.key_hash``), so a blob whose key is gone is reported as such
rather than as bad data.

With the option unset the repository is ``<state_path>/credential-keys``
and the first key is made there when it has none: an all-in-one cloud
needs no setup step. A key is written to a new file with exclusive
creation, so two processes starting together cannot both make "0".
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from oslo_config import cfg

from nubes import exception


def repository(conf: cfg.ConfigOpts) -> Path:
    configured = conf.credential.key_repository
    return Path(configured) if configured else Path(conf.state_path) / "credential-keys"


def key_hash(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


@dataclass(frozen=True)
class CredentialKeys:
    """The repository's keys, primary (the encrypting one) first."""

    keys: tuple[bytes, ...]

    def encrypt(self, blob: str) -> tuple[str, str]:
        """``(encrypted blob, hash of the key that did it)``."""
        token = Fernet(self.keys[0]).encrypt(blob.encode())
        return token.decode(), key_hash(self.keys[0])

    def decrypt(self, encrypted: str, hashed: str) -> str:
        if hashed not in {key_hash(k) for k in self.keys}:
            raise exception.NubesError(
                "a credential was encrypted with a key no longer in the key repository"
            )
        try:
            return MultiFernet([Fernet(k) for k in self.keys]).decrypt(encrypted.encode()).decode()
        except InvalidToken:
            raise exception.NubesError("a stored credential does not decrypt") from None


def load(conf: cfg.ConfigOpts) -> CredentialKeys:
    """The keys of the repository, a first one made when it has none and
    the option is unset (with it set, the operator provides the keys)."""
    path = repository(conf)
    found = _read(path)
    if not found and not conf.credential.key_repository:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path / "0", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        found = _read(path)
    if not found:
        raise exception.ConfigError(
            reason=f"[credential] key_repository {path} holds no key: credentials cannot be stored"
        )
    return CredentialKeys(tuple(found))


def _read(path: Path) -> list[bytes]:
    """The keys in ``path``, highest number first (none if it is missing)."""
    if not path.is_dir():
        return []
    numbered = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit())
    return [p.read_bytes().strip() for _, p in reversed(numbered) if p.read_bytes().strip()]
