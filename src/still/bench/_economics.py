"""What distillation buys: prompt compression, the training cost's break-even volume, and
accuracy by input length.

- Prompt compression: the teacher's prompt (instructions, few-shot examples) against the
  student's, in tokens per request, and what the difference saves per 1,000 requests at
  the teacher's input price.
- Break-even: training costs once (its seconds at a machine's hourly price, `train.
  cost_per_hour` in the task, plus nothing else measured here); each request then costs the
  teacher's price minus the distilled student's. The volume at which the saving has paid
  for training is their ratio. Unpriced models cost 0 per request here (say so; a local
  model still uses a machine), and without an hourly price training counts as free.
- Accuracy by input-length quartile, per role: a student that only fails long inputs
  shows it here, not in one accuracy figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from still.bench._bench import Comparison
from still.bench._stats import wilson
from still.types import Price


def economics(
    cmp: Comparison,
    teacher_price: Price | None,
    train_seconds: float | None = None,
    cost_per_hour: float | None = None,
) -> dict[str, Any]:
    """Prompt compression and break-even numbers from a comparison (JSON-ready)."""
    t, d = cmp.by_role("teacher"), cmp.by_role("distilled") or cmp.by_role("student")
    out: dict[str, Any] = {}
    if t is None or d is None:
        return out
    saved_tokens = t.prompt_tokens_mean - d.prompt_tokens_mean
    out["prompt_tokens_teacher"] = t.prompt_tokens_mean
    out["prompt_tokens_student"] = d.prompt_tokens_mean
    out["prompt_compression"] = (
        t.prompt_tokens_mean / d.prompt_tokens_mean if d.prompt_tokens_mean else None
    )
    out["prompt_tokens_saved_per_1k"] = 1000 * saved_tokens
    out["input_dollars_saved_per_1k"] = (
        teacher_price.cost(round(1000 * saved_tokens), 0) if teacher_price else None
    )
    per_1k_saving = (t.cost_per_1k or 0.0) - (d.cost_per_1k or 0.0)
    out["dollars_saved_per_1k"] = per_1k_saving if t.cost_per_1k is not None else None
    train_cost = (
        train_seconds / 3600 * cost_per_hour
        if train_seconds is not None and cost_per_hour is not None
        else None
    )
    out["training_seconds"] = train_seconds
    out["training_cost"] = train_cost
    if train_cost is not None and per_1k_saving > 0:
        out["break_even_requests"] = math.ceil(1000 * train_cost / per_1k_saving)
    else:
        out["break_even_requests"] = None
    return out


def accuracy_by_length(rows: Sequence[Mapping[str, Any]], buckets: int = 4) -> list[dict[str, Any]]:
    """Accuracy with Wilson intervals per role and input-length quantile bucket (by the
    characters of the example's fields), bucket edges shared by all roles."""
    lengths = sorted({int(r["input_chars"]) for r in rows if "input_chars" in r})
    if not lengths:
        return []
    edges = [lengths[min(len(lengths) - 1, len(lengths) * i // buckets)] for i in range(buckets)]
    edges.append(lengths[-1] + 1)
    out = []
    for role in dict.fromkeys(r["role"] for r in rows):
        mine = [r for r in rows if r["role"] == role]
        for lo, hi in zip(edges, edges[1:], strict=False):
            sel = [r for r in mine if lo <= int(r["input_chars"]) < hi]
            if not sel:
                continue
            k = sum(bool(r["correct"]) for r in sel)
            low, high = wilson(k, len(sel))
            out.append({"role": role, "chars_from": lo, "chars_to": hi - 1, "n": len(sel),
                        "accuracy": k / len(sel), "ci_low": low, "ci_high": high})  # fmt: skip
    return out
