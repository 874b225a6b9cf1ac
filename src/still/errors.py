"""The project's error base: what the CLI shows a user as one line.

Every exception `still` raises on purpose (bad input, a stage that cannot do its work, a
budget reached, a tool missing) derives from `StillError`, and the message says what to
do next. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StillError(Exception):
    """A user-facing error: printed as one line by the CLI, with no traceback."""
