"""The completion store: every model call as a SQLite row, content-addressed by request.

`Store` keeps completions (failed ones too) and grades in one file per run, answers a
repeated request from what is stored (`lookup`), and filters and exports what it holds.
It is the only code in `still` that knows SQL; the schema evolves through the ordered
migrations in `_migrations.py`. `read_traffic` turns stored-completion listings and
chat logs from elsewhere into completions to store (`still store import`), and
`traffic_rows` reads those back as (messages, answer, metadata) rows, with what `still proxy`
records live (`exchange_completion`). Importing this
package loads only the standard library, pydantic and the vocabulary (`still.types`,
`still.prices`, `still.errors`, `still.settings`).
"""

from still.store._import import (
    TRAFFIC_SOURCES,
    ImportFormatError,
    ImportResult,
    TrafficRow,
    exchange_completion,
    imported_completions,
    read_traffic,
    traffic_rows,
)
from still.store._store import (
    MAX_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_VALUE_CHARS,
    Store,
    check_metadata,
)

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_METADATA_KEYS",
    "MAX_VALUE_CHARS",
    "TRAFFIC_SOURCES",
    "ImportFormatError",
    "ImportResult",
    "Store",
    "TrafficRow",
    "check_metadata",
    "exchange_completion",
    "imported_completions",
    "read_traffic",
    "traffic_rows",
]
