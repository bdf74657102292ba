"""``/tokens`` and ``/users``: a caller's own tokens (issue, list, revoke), and users.

An ``admin`` token of a user with the ``admin`` permission sees and revokes every user's
tokens; any other token only its own user's. A revoked token is refused at once on
this instance and within ``ISP_PLUGIN_SYNC_INTERVAL`` on the others (see
:mod:`isp.auth.tokens`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response
from tortoise.transactions import in_transaction

from isp import audit
from isp.auth import permissions as perms
from isp.auth.guard import current_principal, require
from isp.auth.models import ApiToken, User
from isp.auth.tokens import MAX_EXPIRY_DAYS, Principal, create_token, revoke_tokens
from isp.core.schemas import Strict
from isp.errors import Forbidden, NotFound
from isp.openapi import document
from isp.pages import PAGE_PARAMS, fetch_page, page_args

bp = Blueprint("auth", __name__)

PREFIX = re.compile(r"^[0-9a-f]{1,16}$")


class TokenIn(Strict):
    scopes: list[Literal["read", "write", "admin"]] | None = Field(default=None, max_length=3)
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=MAX_EXPIRY_DAYS)] | None = None


class TokenIssued(BaseModel):
    token: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None


class TokenOut(BaseModel):
    id: int
    prefix: str
    user: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenOut]
    next: int | None


class UserOut(BaseModel):
    id: int
    name: str
    roles: list[str]
    created_at: datetime


class UserList(BaseModel):
    users: list[UserOut]
    next: int | None


def sees_everyone(principal: Principal) -> bool:
    return "admin" in principal.scopes and perms.has_permission(
        principal.permissions, perms.ADMIN_ACCESS
    )


@bp.post("/tokens")
@require("read")
@tag(["tokens"])
@validate_request(TokenIn)
@validate_response(TokenIssued, 201)
async def issue(data: TokenIn) -> tuple[TokenIssued, int]:
    """Issue a token for the caller, with scopes no wider than the calling token's.

    The token is in this answer only; ``expires_in_days`` (1-3650) limits its life.
    """
    caller = current_principal()
    wanted: list[str] = (
        sorted(set(data.scopes))
        if data.scopes
        else sorted({"read", "write"} & caller.scopes or {"read"})
    )
    wider = sorted(perms.expand_scopes(wanted) - caller.scopes)
    if wider:
        raise Forbidden(
            f"this token cannot issue a token with wider scopes: {', '.join(wider)}",
            scope=wider[0],
        )
    token, record = await create_token(caller.user_name, wanted, data.expires_in_days)
    return (
        TokenIssued(
            token=token, prefix=record.prefix, scopes=record.scopes, expires_at=record.expires_at
        ),
        201,
    )


@bp.get("/tokens")
@require("read")
@tag(["tokens"])
@document(query=PAGE_PARAMS)
@validate_response(TokenList)
async def list_tokens() -> TokenList:
    """The caller's tokens (an admin token: every user's), in id order; never the secret."""
    caller = current_principal()
    query = ApiToken.all().select_related("user")
    if not sees_everyone(caller):
        query = query.filter(user_id=caller.user_id)
    rows, after = await fetch_page(query, page_args())
    return TokenList(
        tokens=[
            TokenOut(
                id=t.id,
                prefix=t.prefix,
                user=t.user.name,
                scopes=list(t.scopes),
                created_at=t.created_at,
                expires_at=t.expires_at,
                revoked_at=t.revoked_at,
                last_used_at=t.last_used_at,
            )
            for t in rows
        ],
        next=after,
    )


@bp.delete("/tokens/<prefix>")
@require("read")
@tag(["tokens"])
@document(responses={204: {"description": "revoked"}})
async def revoke(prefix: str) -> tuple[str, int]:
    """Revoke a token by its prefix: one of the caller's own, or any with an admin token."""
    caller = current_principal()
    owner = None if sees_everyone(caller) else caller.user_id
    if not PREFIX.match(prefix):
        raise NotFound(f"no token with prefix {prefix!r}")
    matching = ApiToken.filter(prefix=prefix)
    if owner is not None:
        matching = matching.filter(user_id=owner)
    if not await matching.exists():
        raise NotFound(f"no token with prefix {prefix!r}" + ("" if owner is None else " of yours"))
    async with in_transaction() as conn:
        await audit.record(conn, caller.user_name, "token_revoke", detail={"prefix": prefix})
    await revoke_tokens(prefix, owner)
    return "", 204


@bp.get("/users")
@require("admin")
@tag(["users"])
@document(query=PAGE_PARAMS)
@validate_response(UserList)
async def list_users() -> UserList:
    """Users in id order, with their roles."""
    rows, after = await fetch_page(User.all().prefetch_related("roles"), page_args())
    return UserList(
        users=[
            UserOut(
                id=u.id,
                name=u.name,
                roles=sorted(r.name for r in u.roles),
                created_at=u.created_at,
            )
            for u in rows
        ],
        next=after,
    )
