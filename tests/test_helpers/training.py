"""Training data for the tests of the training loop (checkpoints, several processes): 16
chat rows of four TREC-like labels, written as the chat JSONL `still export` writes."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = [
    ("Who wrote the play?", "human"),
    ("Where is the river?", "location"),
    ("How many days?", "number"),
    ("What does NASA stand for?", "abbreviation"),
] * 4


def write_chat_data(tmp_path: Path, rows: list[tuple[str, str]] = ROWS) -> Path:
    """`tmp_path/train.jsonl`: one system + user + assistant conversation per (q, a) row."""
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [
                {"role": "system", "content": "Classify."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]}) + "\n"
            for q, a in rows
        )
    )  # fmt: skip
    return path
