"""Helpers shared by tests (a package, as inspect_ai's tests/test_helpers): small task
files and their data for pipeline and CLI tests. Import them as `from test_helpers import
write_task`; pytest puts tests/ on the path (conftest.py lives there)."""

from test_helpers.tasks import LABELS, write_task

__all__ = ["LABELS", "write_task"]
