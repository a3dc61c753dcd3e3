"""What open_client takes, checked before anything is opened, and the token each
connection sends (a token function is called at each connection, and may fail)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence

import trio

from .._errors import InvalidURL, TokenUnavailable
from ..protocol._limits import MAX_TOKEN_LENGTH
from ..store import store_for_target
from ..transport import parse_ws_url

#: A token, or a function that returns the current one (sync or async).
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]


async def fetch_token(token: TokenSource | None, seconds: float) -> str | None:
    """The token for the next connection: the one given, or the token function's (None:
    no token).

    Raises:
        TokenUnavailable: The function raised, did not answer within ``seconds``, or
            returned something that is neither a token nor None.
    """
    if token is None or isinstance(token, str):
        return token
    try:
        with trio.fail_after(seconds):
            value = token()
            if inspect.isawaitable(value):
                value = await value
    except trio.TooSlowError:
        raise TokenUnavailable(
            f"the token function did not return within {seconds:g}s (connect_timeout)"
        ) from None
    except Exception as exc:
        raise TokenUnavailable(f"the token function raised {exc!r}") from exc
    if value is None:
        return None  # none to give: the server says whether it needs one
    return _checked_token(value, "what the token function returned")


def _checked_token(value: object, source: str) -> str:
    """``value`` if it is a token a hello can carry; ``source`` names where it came from.

    Raises:
        TokenUnavailable: It is not a non-empty string of at most MAX_TOKEN_LENGTH.
    """
    if not isinstance(value, str):
        raise TokenUnavailable(
            f"{source} is {type(value).__name__} {value!r:.40}, not a token string"
        )
    if not value:
        raise TokenUnavailable(f"{source} is an empty string, not a token")
    if len(value) > MAX_TOKEN_LENGTH:
        raise TokenUnavailable(
            f"{source} is {len(value)} characters long; a token has at most {MAX_TOKEN_LENGTH}"
        )
    return value


def checked_token_source(token: object) -> TokenSource | None:
    """Refuses, at ``open_client``, a token that could never be sent.

    Raises:
        TypeError: Neither None, a string, nor a function.
        ValueError: An empty string or one longer than MAX_TOKEN_LENGTH.
    """
    if token is None or callable(token):
        return token
    if not isinstance(token, str):
        raise TypeError(
            f"token must be a string or a function returning one, not {type(token).__name__}"
        )
    try:
        return _checked_token(token, "the token given")
    except TokenUnavailable as exc:
        raise ValueError(str(exc)) from None


def server_urls(url: str | Sequence[str], *, check: bool) -> tuple[str, ...]:
    """The server URLs open_client was given, as a tuple; ``check``: each is a WebSocket
    URL that names a store (a custom connector may name its peers as it likes).

    Raises:
        InvalidURL: Not a string or a list of them, none at all, or one that can never
            work.
    """
    if isinstance(url, str):
        urls: tuple[str, ...] = (url,)
    elif isinstance(url, bytes | bytearray) or not isinstance(url, Iterable):
        raise InvalidURL(
            f"a server URL is a string like 'ws://host:port' (or a list of them), not "
            f"{type(url).__name__}"
        )
    else:
        urls = tuple(url)
    if not urls:
        raise InvalidURL("open_client needs at least one server URL")
    if check:
        for each in urls:
            _host, _port, resource, _tls = parse_ws_url(each)
            if store_for_target(resource) is None:
                raise InvalidURL(
                    f"{each!r} names no store: use ws://host:port for the default store or "
                    "ws://host:port/<store id> (letters, digits, _ . -; at most 64)"
                )
    return urls
