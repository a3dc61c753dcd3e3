"""The client runtime: ``open_client()`` and the :class:`Client`."""

from ._bus import EventBus, Notification, Subscription
from ._client import Client
from ._config import ClientTimings
from ._open import open_client
from ._reset import ResetReport

__all__ = [
    "Client",
    "ClientTimings",
    "EventBus",
    "Notification",
    "ResetReport",
    "Subscription",
    "open_client",
]
