"""Pulled pages are merged in the order they came, whichever task merges them: the read
loop (a small page, nothing else waiting) or the applier (``client/_session.py``)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_sync.client._session import ClientSession
from trio_sync.protocol import PullPage
from trio_sync.testing import check_run, run_scenario


def test_a_page_merged_by_the_read_loop_never_passes_one_handed_to_the_applier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What was tried (a review's finding): seed 64 of the simulator, where a page went to
    # the applier (waiting in its receive: the channel stayed empty) and the read loop
    # merged the next page itself before the applier had run, so the client refused a
    # gap that no loss had made and pulled again. Watched from outside: the pages handed
    # to the applier and not merged yet, at each merge the read loop makes itself.
    handed: dict[int, list[PullPage]] = {}  # by session
    passed: list[tuple[int, int]] = []
    init = ClientSession.__init__
    apply = ClientSession._apply

    def watched_init(self: ClientSession, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        waiting = handed.setdefault(id(self), [])
        send = self._send_page.send

        async def send_noted(item: tuple[PullPage, int]) -> None:
            waiting.append(item[0])
            await send(item)

        self._send_page.send = send_noted  # type: ignore[method-assign]

    async def watched_apply(self: ClientSession, pages: list[tuple[PullPage, int]]) -> None:
        waiting = handed[id(self)]
        if trio.lowlevel.current_task().name.endswith("_read_loop"):
            for early in waiting:
                if early.pull_id == self._pull_id and early.events:
                    passed.append((early.events[0].seq or 0, pages[0][0].events[0].seq or 0))
        else:
            for page, _ in pages:
                waiting.remove(page)
        await apply(self, pages)

    monkeypatch.setattr(ClientSession, "__init__", watched_init)
    monkeypatch.setattr(ClientSession, "_apply", watched_apply)
    result = run_scenario(64, policy="supervised")
    assert check_run(result).ok
    assert passed == []
