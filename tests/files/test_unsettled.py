"""The unsettled files' bookkeeping (a failed reconcile's files), without an event loop."""

from __future__ import annotations

from trio_sync.files._unsettled import UnsettledFiles


def test_a_retry_forgets_only_the_files_not_noted_again_since_it_took_them() -> None:
    unsettled = UnsettledFiles()
    assert not unsettled and not unsettled.noted.is_set()
    unsettled.note(["x", "y"])
    assert unsettled.noted.is_set() and "x" in unsettled
    taken = unsettled.take()
    assert set(taken) == {"x", "y"} and "x" in unsettled  # they stay noted while it runs
    unsettled.note(["y"])  # a failure for y while the retry ran
    unsettled.settled(taken)
    assert "x" not in unsettled and "y" in unsettled
    assert unsettled.noted.is_set()  # y is still to be reconciled
    unsettled.settled(unsettled.take())
    assert not unsettled and not unsettled.noted.is_set()


def test_noting_nothing_wakes_nobody() -> None:
    unsettled = UnsettledFiles()
    unsettled.note([])
    assert not unsettled and not unsettled.noted.is_set()
