"""Examples of applications built on trio_sync, run by the tests."""
