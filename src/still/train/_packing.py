"""Sequence packing: several training examples laid end to end in one row, instead of one
example a row padded to the longest (`train.packing`).

Task rows are short (a TREC row is some 60 tokens) and unequal, so a padded batch spends a
share of its compute on padding. Packed, a micro-batch's examples fill rows of at most
`train.pack_length` tokens (first fit, longest first, the rows balanced so that little is
left to pad), each example's `position_ids` restarting at 0, and no attention mask is
passed: transformers then reads the restarts as separate sequences
(masking_utils.find_packed_sequence_indices, which looks only where no cache is made:
use_cache=False) and gives sdpa and eager attention a block-diagonal causal mask, flash
attention its variable-length kernels. An example sees only its own tokens, at the
positions it has alone, so a token loss over packed rows equals the loss over the same
examples padded, up to float rounding (tests/train/test_packing.py pins it).

Packing changes how a batch is laid out, never which examples it holds: `train.batch_size`
still counts examples and the loop (still.train._common) still shares them among
processes and micro-batches, so steps, data position, checkpoints and the per-token mean
of the loss are what they are unpacked. This is why `train.packing` is left out of a
model's content address, like `train.precision`. Only losses made of independent tokens
of each row can pack (SFT's cross-entropy, token KD's divergences); `load_student`
refuses it for the other recipes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from still.tasks import TrainSpec

IGNORE = -100
"""The label the loss skips (torch's cross-entropy ignore_index, as transformers uses)."""

EXTRA_ROWS = 8
"""How many more rows than first fit at full width `pack` tries, narrower."""


@dataclass(frozen=True)
class Collated:
    """Sequences laid out for one forward pass.

    Attributes:
        inputs: the model's keyword arguments: `input_ids` with `attention_mask` (padded),
            or with `position_ids` and no cache (packed); `labels` when given.
        places: where each sequence starts, in the order given: (row, column).
        tokens: the sequences' own tokens.
        positions: rows x width, the tokens the forward pass computes, padding included.
    """

    inputs: dict[str, Any]
    places: list[tuple[int, int]]
    tokens: int
    positions: int

    @property
    def padded_share(self) -> float:
        return 1 - self.tokens / self.positions if self.positions else 0.0


def pack_width(spec: TrainSpec) -> int | None:
    """Tokens a packed row holds under `spec` (train.pack_length, default max_length), or
    None when it does not pack."""
    return (spec.pack_length or spec.max_length) if spec.packing else None


def pack(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of sequences of `lengths` grouped into rows of at most `width` tokens, each
    row's in the order given, so that rows x the longest row (the positions the forward
    pass computes) is smallest: first fit, longest first, into rows as narrow as still
    hold them, for each row count that can beat the best found. A sequence longer than
    `width` has a row of its own."""
    if not lengths:
        return []
    best = _first_fit(lengths, width)
    cost = len(best) * _widest(best, lengths)
    total, longest = sum(lengths), max(lengths)
    # more rows, narrower: worth trying while they could compute fewer positions (a few
    # more rows at most: beyond, the first fit's full rows leave little to gain)
    for rows in range(len(best), min(len(lengths), len(best) + EXTRA_ROWS) + 1):
        narrowest = max(longest, -(-total // rows))
        if rows * narrowest >= cost:
            break
        narrow = _narrowest(lengths, min(width, narrowest), width, rows)
        if narrow is not None and len(narrow) * _widest(narrow, lengths) < cost:
            best, cost = narrow, len(narrow) * _widest(narrow, lengths)
    return best


def _first_fit(lengths: Sequence[int], width: int) -> list[list[int]]:
    """First fit, longest first, into rows of `width` tokens (each row's indices sorted)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None:
            rows.append([i])
            room.append(width - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return [sorted(r) for r in rows]


def _narrowest(lengths: Sequence[int], low: int, high: int, rows: int) -> list[list[int]] | None:
    """`_first_fit` at the narrowest width in [low, high] that needs at most `rows` rows
    (a bisection), or None when even `high` needs more."""
    found = None
    while low <= high:
        mid = (low + high) // 2
        packed = _first_fit(lengths, mid)
        if len(packed) <= rows:
            found, high = packed, mid - 1
        else:
            low = mid + 1
    return found


def _widest(rows: list[list[int]], lengths: Sequence[int]) -> int:
    return max((sum(lengths[i] for i in r) for r in rows), default=0)


def collate(
    seqs: Sequence[list[int]],
    pad: int,
    device: Any,
    width: int | None = None,
    labels: Sequence[list[int]] | None = None,
) -> Collated:
    """`seqs` (token ids) as one forward pass's inputs: one a row right-padded to the
    longest with an attention mask (`width` None), or packed into rows of `width` tokens
    with restarting position ids (see the module). `labels`, one list per sequence, are
    laid out alike, IGNORE on padding and on each sequence's first token (which no token
    of its own predicts; packed, the one before it is another sequence's)."""
    import torch

    targets = None if labels is None else [[IGNORE, *y[1:]] if y else [] for y in labels]
    if width is None:
        groups = [[i] for i in range(len(seqs))]
    else:
        groups = pack([len(s) for s in seqs], width)
    widest = max(sum(len(seqs[i]) for i in g) for g in groups)
    ids: list[list[int]] = []
    rows_labels: list[list[int]] = []
    positions: list[list[int]] = []
    places: list[tuple[int, int]] = [(0, 0)] * len(seqs)
    for r, group in enumerate(groups):
        row: list[int] = []
        for i in group:
            places[i] = (r, len(row))
            row += seqs[i]
        fill = widest - len(row)
        ids.append(row + [pad] * fill)
        # padding is a sequence of its own: nothing real attends to it (it comes last)
        positions.append([p for i in group for p in range(len(seqs[i]))] + list(range(fill)))
        if targets is not None:
            rows_labels.append([t for i in group for t in targets[i]] + [IGNORE] * fill)
    tokens = sum(len(s) for s in seqs)
    inputs: dict[str, Any] = {"input_ids": torch.tensor(ids, device=device)}
    if width is None:
        mask = [[1] * len(seqs[g[0]]) + [0] * (widest - len(seqs[g[0]])) for g in groups]
        inputs["attention_mask"] = torch.tensor(mask, device=device)
    else:
        inputs["position_ids"] = torch.tensor(positions, device=device)
        # transformers looks for packed sequences only where no cache is made
        inputs["use_cache"] = False
    if targets is not None:
        inputs["labels"] = torch.tensor(rows_labels, device=device)
    return Collated(inputs, places, tokens, len(groups) * widest)
