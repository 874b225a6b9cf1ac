"""A small production log to import: support tickets routed by gpt-4o-mini, one request
log row per call, in the shape OpenAI's chat completions API returns (the format `still
store import` reads as `{"request": ..., "response": ...}`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM = "Route the ticket: billing, shipping or other. Answer with one word."

TICKETS = {
    "billing": [
        "I was charged twice for my order.",
        "My card was declined at checkout.",
        "Can I get a refund for the duplicate payment?",
        "The invoice shows the wrong amount.",
        "Why did my subscription price go up?",
        "I need a receipt for my last purchase.",
        "You billed me after I cancelled.",
        "How do I update my payment method?",
    ],
    "shipping": [
        "Where is my parcel? It is a week late.",
        "The courier left my box at the wrong address.",
        "My tracking number does not work.",
        "Can you ship to Canada?",
        "The package arrived damaged.",
        "How long does express delivery take?",
        "I want to change my delivery address.",
        "My order says delivered but nothing came.",
    ],
    "other": [
        "How do I reset my password?",
        "Do you have a store in Berlin?",
        "Can I talk to a human?",
        "Is the app available on Android?",
        "I love your product!",
        "How do I delete my account?",
        "What are your opening hours?",
        "Can I change my username?",
    ],
}
"""Ticket texts by the route the model answered."""

LABELS = list(TICKETS)


def traffic_rows(
    app: str = "support-triage", answers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One request log row per ticket, answered with its route (or `answers[text]`), tagged
    `app` in the request's metadata; ids and creation times in ticket order."""
    rows = []
    for n, (route, text) in enumerate(
        ((r, t) for r, texts in TICKETS.items() for t in texts), start=1
    ):
        answer = (answers or {}).get(text, route)
        rows.append(
            {
                "request": {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text},
                    ],
                    "temperature": 0,
                    "metadata": {"app": app, "route": route},
                },
                "response": {
                    "id": f"chatcmpl-{app}-{n:04d}",
                    "object": "chat.completion",
                    "created": 1739051000 + n,
                    "model": "gpt-4o-mini-2024-07-18",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
                    "system_fingerprint": "fp_b8bc95a0ac",
                },
            }
        )
    return rows


def write_request_log(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write request log rows as JSONL, one call per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
