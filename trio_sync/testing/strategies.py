"""Hypothesis strategies for simulations: seeds and fault mixes.

A property over your own workload, in a few lines::

    from hypothesis import given, settings
    from trio_sync.testing import run_simulation
    from trio_sync.testing.strategies import fault_mixes, seeds

    @settings(deadline=None, max_examples=50)
    @given(seed=seeds(), faults=fault_mixes())
    def test_every_device_ends_with_the_same_list(seed, faults):
        result = run_simulation(seed, workload, invariant=same_list_everywhere, **faults)
        assert result.ok, result.report()

Hypothesis shrinks a failing fault mix towards no faults at all, so the example it reports
is close to the smallest that fails; ``result.report()`` carries the replay command.
(``deadline=None``: a simulation takes real time, which Hypothesis would count.)

This module imports Hypothesis, which trio_sync itself does not depend on.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: The largest seed drawn (seeds are strings to the random sources: any int works).
MAX_SEED = 2**32 - 1


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``run_simulation`` / ``run_scenario``."""
    return st.integers(min_value=0, max_value=MAX_SEED)


def fault_mixes(
    *,
    max_ack_loss: float = 0.3,
    max_page_loss: float = 0.2,
    max_ack_delay: float = 0.1,
    max_disconnects: int = 3,
    max_server_restarts: int = 2,
    max_client_crashes: int = 2,
    max_lost_on_purpose: int = 2,
) -> st.SearchStrategy[dict[str, Any]]:
    """Background faults to pin: ``run_simulation(seed, workload, **mix)``.

    Probabilities come from a few levels (none, some, the maximum) rather than any float,
    so that shrinking lands on "none" and examples read well; counts shrink to zero.
    ``lose_acks``/``lose_pages`` lose the n-th ack or page the server sends.
    """

    def levels(maximum: float) -> st.SearchStrategy[float]:
        return st.sampled_from(sorted({0.0, round(maximum / 4, 3), maximum}))

    def nth() -> st.SearchStrategy[tuple[int, ...]]:
        return st.lists(st.integers(1, 30), max_size=max_lost_on_purpose, unique=True).map(
            lambda found: tuple(sorted(found))
        )

    return st.fixed_dictionaries(
        {
            "ack_loss": levels(max_ack_loss),
            "ack_delay": levels(max_ack_delay),
            "page_loss": levels(max_page_loss),
            "disconnects": st.integers(0, max_disconnects),
            "server_restarts": st.integers(0, max_server_restarts),
            "client_crashes": st.integers(0, max_client_crashes),
            "lose_acks": nth(),
            "lose_pages": nth(),
        }
    )


def no_faults() -> st.SearchStrategy[dict[str, Any]]:
    """The fault mix with every background fault off (a clean network)."""
    from ._params import NO_FAULTS

    return st.just(dict(NO_FAULTS))
