"""The completion store: SQLite, content-addressed, resumable (see `_store.py`)."""

from still.store._store import Store, check_metadata

__all__ = ["Store", "check_metadata"]
