"""Tokens: who may sync which store as whom, until when. Pure, so tested without a loop."""

from __future__ import annotations

import base64

import pytest

from trio_sync.protocol import TokenError, issue_token, read_token, token_problem

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_800_000_000.0


def token(store: str = "todo", client: str = "A", expires: float = NOW + 60) -> str:
    return issue_token(SECRET, store_id=store, client_id=client, expires_at=expires)


def problem(
    token_: str | None, *, store: str = "todo", client: str = "A", now: float = NOW
) -> str | None:
    return token_problem(token_, [SECRET], store_id=store, client_id=client, now=now)


def test_a_valid_token_is_accepted_and_says_what_it_allows() -> None:
    assert problem(token()) is None
    claims = read_token(token(), [SECRET])
    assert (claims.store_id, claims.client_id, claims.expires_at) == ("todo", "A", NOW + 60)


@pytest.mark.parametrize(
    ("what", "given", "words"),
    [
        ("no token", None, "requires a token"),
        ("garbage", "hello", "malformed"),
        ("bad base64", "v1.!!!.!!!", "malformed"),
        ("unknown version", "v9." + token().split(".", 1)[1], "malformed"),
        (
            "signed by another secret",
            issue_token(OTHER, store_id="todo", client_id="A", expires_at=NOW + 60),
            "not signed by this server's secret",
        ),
        (
            "payload changed after signing",
            token().replace(token().split(".")[1], token(client="B").split(".")[1]),
            "not signed",
        ),
        ("expired", token(expires=NOW - 1), "expired at 2027-01-15 07:59:59 UTC"),
        ("expires exactly now", token(expires=NOW), "expired"),
        ("another store", token(store="other"), "for store 'other', not 'todo'"),
        ("another client", token(client="B"), "for client 'B', not 'A'"),
        # Found by the hostile probe: the payload was parsed before the signature, so an
        # unsigned token of 3000 nested brackets raised RecursionError (a traceback).
        (
            "an unsigned payload that nests deeply",
            "v1." + base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=") + ".AAAA",
            "not signed by this server's secret",
        ),
        ("padding added", token() + "==", "not base64url"),
        ("a fourth part", token() + ".x", "malformed"),
    ],
)
def test_a_token_that_does_not_allow_this_is_refused_with_the_reason(
    what: str, given: str | None, words: str
) -> None:
    reason = problem(given)
    assert reason is not None and words in reason
    if given:
        assert given not in reason  # a reason never repeats the token


def test_a_token_valid_for_part_of_a_second_is_not_expired_when_made() -> None:
    # Tried (a third review's finding): trio-sync token --ttl 1 at NOW + 0.4: the expiry
    # was rounded down to whole seconds, so the token was expired before it was used.
    made_at = NOW + 0.4
    assert problem(token(expires=made_at + 1), now=made_at + 0.9) is None
    assert read_token(token(expires=made_at + 1), [SECRET]).expires_at == NOW + 2


def test_a_rotated_secret_still_accepts_tokens_signed_by_the_previous_one() -> None:
    assert token_problem(token(), [OTHER, SECRET], store_id="todo", client_id="A", now=NOW) is None


def test_an_absurd_expiry_is_described_not_crashed_on() -> None:
    reason = problem(token(expires=-(10**18)))
    assert reason is not None and "expired at UNIX time" in reason


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(TokenError, match="at least 16 bytes"):
        issue_token(b"short", store_id="s", client_id="c", expires_at=NOW)


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    from trio_sync.protocol import TokenBucket

    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)  # the 4th waits one token's time
    assert bucket.take(0.1) == pytest.approx(0.1)  # still in debt: waits its own token
    assert bucket.take(10.0) == 0.0  # idle long enough: a full burst again
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
