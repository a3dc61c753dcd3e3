"""What a process that serves many connections tunes at start-up, and a library leaves to
its host: ``trio-sync serve`` calls :func:`tune_process`; a process that embeds the server
may (docs/deploy.md)."""

from __future__ import annotations

import ctypes
import gc


def tune_process() -> None:
    """Tunes this process for serving: glibc's allocator and CPython's cycle collector.

    Call it once, after the process's own start-up (see :func:`tune_collector`).
    """
    tune_allocator()
    tune_collector()


def tune_allocator() -> None:
    """Makes glibc hand large freed blocks back to the system: with its default, the
    threshold for mapping large blocks grows after the first one is freed, and a server
    that held many pages for slow clients kept that memory after they left (measured: 318
    MB kept after 100 such clients, 52 MB with a fixed threshold). Nothing elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


#: Net new container objects between two young collections (CPython's default is 700).
YOUNG_COLLECTION_THRESHOLD = 20_000


def tune_collector() -> None:
    """Makes CPython's cycle collector run far less often in this process, and never scan
    the objects of start-up again.

    A server holds a few hundred long-lived objects per connection, and under load it
    makes objects that live a little while (a page in flight to each reader). With the
    default thresholds those survive the young collections fast enough to set off a full
    collection about once a second, each a pause that scans every object. Measured with
    500 readers (``bench/fanout.py``): 120 ms pauses, once a second, 2.6 s of the
    server's 12 s; p99 delivery 340 ms. With a threshold of 20,000, 11 collections
    (0.16 s) and p99 210 ms.

    What cyclic garbage there is waits longer to be freed, so a session that ends leaves
    none (``release_frames`` and ``ServerSession``): under 90 s of hostile connection
    churn, 6,000 connections opened, refused, reset and left hanging, the server's RSS
    stayed between 71 and 76 MB. Nothing elsewhere: a library does not change its host's
    collector.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
