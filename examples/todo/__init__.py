"""A todo list folded from events, and its simulation (``python -m examples.todo``)."""
