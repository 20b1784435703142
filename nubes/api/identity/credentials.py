"""Keystone's ``/v3/credentials``: secrets a user stores with the identity
service (``ec2`` access/secret pairs, ``totp`` seeds, ``cert``...).

A blob is encrypted before it reaches the database (the keys of
``[credential] key_repository``, :mod:`credential_keys`) and decrypted only
to answer its owner or an admin. A user creates, sees, changes and deletes
its own credentials; an admin anyone's. An ``ec2`` blob is JSON naming its
``access`` key and the credential's id is that key's SHA-256 (Keystone's
rule, so the EC2 signature check finds it by access key); it must name the
project it is for. Only the blob may change: a credential is not retyped,
rescoped or given to another user (delete it and create another).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy
from nubes.api.identity import credential_keys
from nubes.api.identity.common import collection_links, link
from nubes.api.middleware import api_state, request_context
from nubes.api.state import ApiState
from nubes.api.validation import json_body, validate
from nubes.db.api import credentials, identity

_BLOB = {"type": "string", "minLength": 1, "maxLength": 65535}
CREATE = {
    "type": "object",
    "properties": {
        "credential": {
            "type": "object",
            "properties": {
                "blob": _BLOB,
                "type": {"type": "string", "minLength": 1, "maxLength": 255},
                "user_id": {"type": "string", "minLength": 1, "maxLength": 64},
                "project_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            },
            "required": ["blob", "type", "user_id"],
        }
    },
    "required": ["credential"],
}
UPDATE = {
    "type": "object",
    "properties": {
        "credential": {
            "type": "object",
            "properties": {"blob": _BLOB},
            "required": ["blob"],
            "additionalProperties": False,
        }
    },
    "required": ["credential"],
}


def _keys(state: ApiState) -> credential_keys.CredentialKeys:
    """The key repository, read (and its first key made) on first use."""
    if "credential_keys" not in state.extras:
        state.extras["credential_keys"] = credential_keys.load(state.conf)
    keys: credential_keys.CredentialKeys = state.extras["credential_keys"]
    return keys


def _view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    blob = _keys(api_state(request)).decrypt(row["encrypted_blob"], row["key_hash"])
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "type": row["type"],
        "blob": blob,
        "links": link(request, f"credentials/{row['id']}"),
    }


def _ec2_access(blob: str) -> str:
    """The ``access`` key of an ec2 blob; 400 unless the blob is JSON naming one."""
    try:
        parsed = json.loads(blob)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("access"), str):
        raise exception.ValidationError(
            field="blob", reason="an ec2 credential's blob is a JSON object with an 'access' key"
        )
    return str(parsed["access"])


def _is_admin(request: Request) -> bool:
    return policy.allowed(request_context(request), policy.Rule.ADMIN)


def _owner_or_admin(request: Request, user_id: str, action: str) -> None:
    ctxt = request_context(request)
    if ctxt.user_id != user_id:
        policy.authorize(ctxt, f"identity:{action}", policy.Rule.ADMIN)


async def create_credential(request: Request) -> Response:
    body = await json_body(request)
    validate(body, CREATE)
    ref = body["credential"]
    _owner_or_admin(request, ref["user_id"], "create_credential")
    cred_id = identity.new_id()
    if ref["type"] == "ec2":
        if not ref.get("project_id"):
            raise exception.ValidationError(
                field="project_id", reason="an ec2 credential is for one project"
            )
        cred_id = hashlib.sha256(_ec2_access(ref["blob"]).encode()).hexdigest()
    encrypted, key_hash = _keys(api_state(request)).encrypt(ref["blob"])
    async with api_state(request).db.writer() as conn:
        if await identity.user_get_by_id(conn, ref["user_id"]) is None:
            raise exception.NotFound(reason=f"Could not find user: {ref['user_id']}.")
        if (
            ref.get("project_id")
            and await identity.project_get_by_id(conn, ref["project_id"]) is None
        ):
            raise exception.NotFound(reason=f"Could not find project: {ref['project_id']}.")
        row = await credentials.credential_create(
            conn,
            {
                "id": cred_id,
                "user_id": ref["user_id"],
                "project_id": ref.get("project_id"),
                "type": ref["type"],
                "encrypted_blob": encrypted,
                "key_hash": key_hash,
            },
        )
    return JSONResponse({"credential": _view(request, row)}, status_code=201)


async def list_credentials(request: Request) -> Response:
    q = request.query_params
    user_id = q.get("user_id")
    ctxt = request_context(request)
    async with api_state(request).db.reader() as conn:
        rows = await credentials.credential_get_all(conn, user_id=user_id, type_=q.get("type"))
    if not _is_admin(request):
        # Anyone may list, and sees only its own (Keystone's filtering).
        rows = [r for r in rows if r["user_id"] == ctxt.user_id]
    return JSONResponse(
        {"credentials": [_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def _found(request: Request, conn: Any, action: str) -> dict[str, Any]:
    cred_id = request.path_params["credential_id"]
    row = await credentials.credential_get(conn, cred_id)
    if row is None:
        raise exception.NotFound(reason=f"Could not find credential: {cred_id}.")
    _owner_or_admin(request, row["user_id"], action)
    return row


async def show_credential(request: Request) -> Response:
    async with api_state(request).db.reader() as conn:
        row = await _found(request, conn, "get_credential")
    return JSONResponse({"credential": _view(request, row)})


async def update_credential(request: Request) -> Response:
    body = await json_body(request)
    validate(body, UPDATE)
    blob = body["credential"]["blob"]
    async with api_state(request).db.writer() as conn:
        row = await _found(request, conn, "update_credential")
        if row["type"] == "ec2":
            _ec2_access(blob)
        encrypted, key_hash = _keys(api_state(request)).encrypt(blob)
        await credentials.credential_update(conn, row["id"], encrypted, key_hash)
        row = {**row, "encrypted_blob": encrypted, "key_hash": key_hash}
    return JSONResponse({"credential": _view(request, row)})


async def delete_credential(request: Request) -> Response:
    async with api_state(request).db.writer() as conn:
        row = await _found(request, conn, "delete_credential")
        await credentials.credential_delete(conn, row["id"])
    return Response(status_code=204)


ROUTES = [
    Route("/v3/credentials", list_credentials, methods=["GET"]),
    Route("/v3/credentials", create_credential, methods=["POST"]),
    Route("/v3/credentials/{credential_id}", show_credential, methods=["GET"]),
    Route("/v3/credentials/{credential_id}", update_credential, methods=["PATCH"]),
    Route("/v3/credentials/{credential_id}", delete_credential, methods=["DELETE"]),
]
