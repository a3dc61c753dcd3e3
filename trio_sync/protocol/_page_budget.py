"""How large the next pull page may be, per connection: slow start for history pages.

A page costs the server its memory until the client has read it, so a connection that
stops reading should hold a small page, and one that keeps up should get large ones (a
catch-up is faster in fewer, larger pages). Like TCP's slow start: the budget starts small,
doubles each time the connection had room for the next page at once, and halves each time
the server had to wait for the client to read.
"""

from __future__ import annotations


class PageBudget:
    """The byte budget of a connection's next page, between ``smallest`` and ``largest``."""

    def __init__(self, *, smallest: int, largest: int) -> None:
        if not 0 < smallest <= largest:
            raise ValueError("need 0 < smallest <= largest")
        self.smallest = smallest
        self.largest = largest
        self.bytes = smallest

    def after_send(self, *, waited: bool) -> None:
        """The page was queued; ``waited``: the client had not read the one before yet."""
        if waited:
            self.bytes = max(self.smallest, self.bytes // 2)
        else:
            self.bytes = min(self.largest, self.bytes * 2)
