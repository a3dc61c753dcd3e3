"""Access tokens: HMAC-signed, stateless, so every server node checks them alone.

A token names the store, the client id it may act as, and when it expires::

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload))>

The payload is ``{"s": store_id, "c": client_id, "e": expiry in UNIX seconds}``. A server
holds one or more secrets (the first signs; all verify, so a secret can be rotated
without cutting off clients holding tokens signed by the previous one). Pure code: the
caller passes the time in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Sequence

import attrs

from .._errors import TrioSyncError

_VERSION = "v1"
#: A secret shorter than this is refused: it could be guessed.
MIN_SECRET_BYTES = 16


class TokenError(TrioSyncError, ValueError):
    """A token cannot be made or is not valid (the message says why, never the token)."""


@attrs.frozen
class TokenClaims:
    """What a valid token allows."""

    store_id: str
    client_id: str
    expires_at: float


def utc_time(stamp: float) -> str:
    """A UNIX time as a UTC date, for messages (never raises)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    except (OverflowError, OSError, ValueError):
        return f"UNIX time {stamp:.0f}"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()


def check_secret(secret: bytes) -> bytes:
    """Returns ``secret`` if it is long enough to sign tokens.

    Raises:
        TokenError: Shorter than :data:`MIN_SECRET_BYTES`.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenError(
            f"a token secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
        )
    return secret


def issue_token(secret: bytes, *, store_id: str, client_id: str, expires_at: float) -> str:
    """Signs a token that lets ``client_id`` sync store ``store_id`` until ``expires_at``.

    Raises:
        TokenError: The secret is too short.
    """
    check_secret(secret)
    payload = json.dumps(
        # Whole seconds, rounded up: valid until at least ``expires_at`` (rounded down, a
        # token of a second's lifetime could be expired when handed out).
        {"s": store_id, "c": client_id, "e": math.ceil(expires_at)},
        separators=(",", ":"),
    )
    signed = f"{_VERSION}.{_b64encode(payload.encode())}"
    return f"{signed}.{_b64encode(_signature(secret, signed))}"


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def read_token(token: str, secrets: Sequence[bytes]) -> TokenClaims:
    """Checks a token's form and signature and returns what it claims. Nothing of the
    payload is parsed before the signature checks out: an unsigned token is only text.

    Raises:
        TokenError: Malformed, or signed with none of ``secrets``.
    """
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise TokenError("the token is malformed (expected v1.<payload>.<signature>)")
    _, payload_text, signature_text = parts
    # Exactly the encoding issue_token writes (no padding, no other characters), so one
    # token has one spelling.
    if not (_BASE64URL.fullmatch(payload_text) and _BASE64URL.fullmatch(signature_text)):
        raise TokenError("the token is malformed (not base64url)")
    try:
        signature = _b64decode(signature_text)
    except (binascii.Error, ValueError):
        raise TokenError("the token is malformed (bad base64)") from None
    signed = f"{_VERSION}.{payload_text}"
    if not any(hmac.compare_digest(signature, _signature(s, signed)) for s in secrets):
        raise TokenError("the token is not signed by this server's secret")
    try:
        payload = json.loads(_b64decode(payload_text))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError("the token's payload is not JSON") from None
    if (
        type(payload) is not dict
        or type(payload.get("s")) is not str
        or type(payload.get("c")) is not str
        or type(payload.get("e")) is not int
    ):
        raise TokenError("the token's payload is not {s: store, c: client, e: expiry}")
    return TokenClaims(store_id=payload["s"], client_id=payload["c"], expires_at=payload["e"])


def check_token(
    token: str | None,
    secrets: Sequence[bytes],
    *,
    store_id: str,
    client_id: str,
    now: float,
) -> TokenClaims:
    """Returns what ``token`` allows if it lets ``client_id`` sync store ``store_id`` now.

    Raises:
        TokenError: Why not (the message never contains the token).
    """
    if token is None:
        raise TokenError("this server requires a token: open_client(..., token=...)")
    claims = read_token(token, secrets)
    if claims.expires_at <= now:
        raise TokenError(f"the token expired at {utc_time(claims.expires_at)}: ask for a new one")
    if claims.store_id != store_id:
        raise TokenError(f"the token is for store {claims.store_id!r}, not {store_id!r}")
    if claims.client_id != client_id:
        raise TokenError(f"the token is for client {claims.client_id!r}, not {client_id!r}")
    return claims


def token_problem(
    token: str | None,
    secrets: Sequence[bytes],
    *,
    store_id: str,
    client_id: str,
    now: float,
) -> str | None:
    """Why ``client_id`` may not sync store ``store_id`` with ``token`` (None: it may).

    The answer never contains the token itself.
    """
    try:
        check_token(token, secrets, store_id=store_id, client_id=client_id, now=now)
    except TokenError as exc:
        return str(exc)
    return None
