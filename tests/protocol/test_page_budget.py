"""The page budget: slow start for history pages. A table, no event loop."""

from __future__ import annotations

import pytest

from trio_sync.protocol import PageBudget


def test_pages_grow_while_the_client_keeps_up_and_shrink_when_it_does_not() -> None:
    budget = PageBudget(smallest=64, largest=1000)
    sizes = [budget.bytes]
    for waited in [False, False, False, False, False, True, True, True, True, True, False]:
        budget.after_send(waited=waited)
        sizes.append(budget.bytes)
    assert sizes == [64, 128, 256, 512, 1000, 1000, 500, 250, 125, 64, 64, 128]


def test_a_budget_needs_sensible_bounds() -> None:
    with pytest.raises(ValueError):
        PageBudget(smallest=0, largest=10)
    with pytest.raises(ValueError):
        PageBudget(smallest=20, largest=10)
