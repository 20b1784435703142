"""Key pairs: generation, import, fingerprints, and the per-user quota.

Types as Nova has them: ``ssh`` (an OpenSSH public key; fingerprint the MD5
of its blob, colon-separated) and ``x509`` (a PEM certificate; fingerprint
the SHA-1 of its DER form). A generated key pair's private key is returned
once, by the create that made it, and never stored.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from oslo_config import cfg

from nubes import exception
from nubes.api import quotas
from nubes.db.api import keypairs as keypairs_db
from nubes.db.api import quotas as quotas_db
from nubes.db.engine import Database

TYPES = ("ssh", "x509")
#: Nova's key size for generated key pairs.
RSA_BITS = 2048
#: How long a generated x509 certificate is valid (Nova: ten years).
X509_DAYS = 3650


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key; InvalidKeypair when it is not one."""
    parts = public_key.strip().split()
    if len(parts) < 2:
        raise exception.InvalidKeypair(reason="failed to generate fingerprint")
    try:
        serialization.load_ssh_public_key(" ".join(parts[:2]).encode())
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, binascii.Error, exception.NubesError):
        raise exception.InvalidKeypair(reason="failed to generate fingerprint") from None
    except Exception:  # cryptography raises UnsupportedAlgorithm for unknown key types
        raise exception.InvalidKeypair(reason="failed to generate fingerprint") from None
    return _colons(hashlib.md5(blob, usedforsecurity=False).digest())


def x509_fingerprint(pem: str) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise exception.InvalidKeypair(
            reason="failed to generate X509 fingerprint. Error message: not a PEM certificate"
        ) from None
    der = cert.public_bytes(serialization.Encoding.DER)
    return _colons(hashlib.sha1(der, usedforsecurity=False).digest())


def fingerprint(key_type: str, public_key: str) -> str:
    return x509_fingerprint(public_key) if key_type == "x509" else ssh_fingerprint(public_key)


def generate(key_type: str, user_id: str) -> tuple[str, str]:
    """A new (private key PEM, public key) of ``key_type``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "x509":
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id or "nubes")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=X509_DAYS))
            .sign(key, hashes.SHA256())
        )
        return private, cert.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + " Generated-by-Nova"


async def create(
    db: Database,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    user_id: str,
    name: str,
    key_type: str,
    public_key: str | None,
) -> dict[str, Any]:
    """Import ``public_key``, or generate one (the result then holds ``private_key``)."""
    private: str | None = None
    if public_key is None:
        private, public_key = generate(key_type, user_id)
    values = {
        "name": name,
        "user_id": user_id,
        "type": key_type,
        "public_key": public_key,
        "fingerprint": fingerprint(key_type, public_key),
    }
    async with db.writer() as conn:
        # Counted and inserted under the project's quota lock: never overshoots.
        await quotas_db.lock_project(conn, project_id)
        used = await keypairs_db.count(conn, user_id)
        await quotas.check_key_pairs(conn, conf, project_id=project_id, user_id=user_id, used=used)
        row = await keypairs_db.create(conn, values)
    if private is not None:
        row["private_key"] = private
    return row
