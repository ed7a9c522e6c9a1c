"""API keys: `dk_` + 43 random characters, shown once, stored as sha256. Every object belongs to the
key's owner; lookups filter by owner, so another owner's object is simply not found (404)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.base import new_id, utcnow
from .db.models import ApiKey
from .db.session import get_session
from .errors import Unauthorized


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, owner: str, name: str = "") -> tuple[ApiKey, str]:
    secret = "dk_" + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), owner=owner, name=name, key_hash=hash_key(secret), prefix=secret[:8])
    session.add(row)
    session.flush()
    return row, secret


def revoke_key(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def current_owner(request: Request,
                  session: Annotated[Session, Depends(get_session, scope="function")]) -> str:
    secret = _presented(request)
    if not secret:
        raise Unauthorized("send the API key as 'Authorization: Bearer dk_...'",
                           headers={"WWW-Authenticate": "Bearer"})
    digest = hash_key(secret)
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    # compare_digest keeps the final comparison constant-time; the lookup is by a hash of the secret
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise Unauthorized("the API key is not valid or has been revoked", headers={"WWW-Authenticate": "Bearer"})
    request.state.owner = row.owner
    # End the transaction now: the pooled connection goes back until the endpoint needs one. Held across the
    # hop to the endpoint's thread, connections and threadpool slots can wait on each other under load.
    session.commit()
    return row.owner
