"""trio_sync: a local-first event-log sync engine for Trio applications."""
